"""The region refiner's network: a small depthwise-separable CNN per face-part kind
(:mod:`asmnet.regions` cuts the patches and maps its output back to the image)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import PATCH_HEADS


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with BatchNorm and ReLU6 (MobileNet v1's block)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


def final_map_side(size: int) -> int:
    """Side of the last feature map of a ``size``-pixel patch (four stride-2 layers, padding 1)."""
    for _ in range(4):
        size = (size + 1) // 2
    return size


class PatchNet(nn.Module):
    """Points of one face part from its patch: input (B, 3, S, S) RGB 0..255, output (B, 2n), each
    point's offset from its template position in units of S (the head starts at zero, so an
    untrained refiner leaves the template, i.e. the first prediction's frame, where it is).
    ``head="spatial"`` needs the patch side ``size`` (its linear layer reads every cell of the map)."""

    def __init__(self, num_points: int, width: int = 16, head: str = "pooled", size: int | None = None):
        super().__init__()
        if head not in PATCH_HEADS:
            raise ValueError(f"head {head!r}: must be one of {', '.join(PATCH_HEADS)}")
        if head == "spatial" and not size:
            raise ValueError("a spatial head needs the patch size")
        w = int(width)
        self.spatial = head == "spatial"
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU6(inplace=True),
            _separable(w, 2 * w, 1), _separable(2 * w, 4 * w, 2), _separable(4 * w, 4 * w, 1),
            _separable(4 * w, 8 * w, 2), _separable(8 * w, 8 * w, 1), _separable(8 * w, 16 * w, 2))
        cells = final_map_side(size) ** 2 if self.spatial else 1
        self.head = nn.Linear(16 * w * cells, 2 * num_points)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.features((patches - 127.5) / 64.0)
        return self.head(x.flatten(1) if self.spatial else F.adaptive_avg_pool2d(x, 1).flatten(1))


class PatchEnsemble(nn.Module):
    """The mean of several :class:`PatchNet` of one kind (same input and output): part networks
    trained apart make partly independent errors, so their mean is closer to the truth than
    each. Exported as one graph, it is used exactly like a single network."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(patches) for m in self.members]).mean(0)
