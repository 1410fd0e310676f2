"""ASMNet: a MobileNetV2 cut after block_15, with features fused from six depths.

The network (design brief, section 1):

* MobileNetV2 backbone: a 3x3 stride-2 stem (32 channels) and the inverted-residual stages
  ``(t, c, n, s)`` of :data:`MNV2_STAGES`. ASMNet stops after the 160-channel stage (Keras
  ``block_15``); the baseline ``"mnv2"`` keeps the 320-channel block and the 1x1 conv to 1280.
* ASMNet taps the outputs of ``block_1, block_3, block_6, block_10, block_13, block_15`` (Keras
  numbering: the inverted-residual blocks after ``expanded_conv``, counted from 1), reduces each
  by global average pooling and concatenates them: 24+32+64+96+160+160 = 536 features at width 1.
* Dropout, then two linear heads on the same features: landmarks ``(B, 2N)`` as ``x0, y0, x1, ...``
  and head pose ``(B, 3)`` (yaw, pitch, roll).
* ``head="grid"`` replaces the linear landmark head by :class:`GridHead`, a pixel-in-pixel head on
  the stride-16 map (an 8x8 grid at 128 px): every cell scores each landmark and regresses its
  offset from the cell centre; the points are the score-weighted mean of the cells' estimates.
  Regression from pooled features loses the positions the trunk computed; this keeps them. Pose
  stays on the pooled features.

The model takes float32 NCHW RGB images with values 0..255 and normalises them itself, so an
exported ONNX graph takes raw pixels. Any input side >= 32 works (global average pooling); sides
divisible by 32 give the grids of the brief (56, 28, 14, 14, 7, 7 at 224).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import ARCHS, HEADS, arch_head_problem

__all__ = [
    "ARCHS",
    "ASMNET_TAPS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MNV2_STAGES",
    "GRID_TAPS",
    "HEADS",
    "ASMNet",
    "ConvBNAct",
    "GridHead",
    "InvertedResidual",
    "build_model",
    "head_l2",
    "make_divisible",
]

#: MobileNetV2 stages ``(expansion t, out channels c, blocks n, first stride s)``.
MNV2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

#: Indices (into the flat list of inverted-residual blocks, ``expanded_conv`` = 0) whose outputs
#: ASMNet taps: Keras ``block_1, block_3, block_6, block_10, block_13, block_15``.
ASMNET_TAPS: tuple[int, ...] = (1, 3, 6, 10, 13, 15)


#: Blocks the grid head reads (asmnet arch): the last stride-16 block (``block_12``, 96 channels)
#: and the last block (``block_15``, stride 32, 160 channels), upsampled to the stride-16 grid.
GRID_TAPS: tuple[int, int] = (12, 15)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` as MobileNetV2 does.

    Rounds to the nearest multiple (at least ``min_value``, default ``divisor``) and adds one
    ``divisor`` when rounding down would lose more than 10 % of ``value``.
    """
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvBNAct(nn.Sequential):
    """Convolution (no bias), batch norm and, unless ``act`` is False, ReLU6."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ):
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (xt, skipped when t == 1), 3x3 depthwise, 1x1 linear project.

    A residual add joins input and output when the stride is 1 and the channel count is unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, kernel_size=1))
        layers.append(ConvBNAct(hidden, hidden, kernel_size=3, stride=stride, groups=hidden))
        layers.append(ConvBNAct(hidden, out_channels, kernel_size=1, act=False))
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class GridHead(nn.Module):
    """Pixel-in-pixel landmark head: scores and sub-cell offsets per grid cell, decoded softly.

    Reads a fine map ``(B, C_fine, H, W)`` and a coarse one (upsampled to ``H x W``, nearest),
    fuses them (1x1 conv, 3x3 depthwise conv), and predicts per landmark and cell a score and an
    ``(x, y)`` offset from the cell centre in cell widths. A landmark is the softmax-weighted mean
    over the cells of ``centre + offset``: differentiable, so the point losses (and the ASM term)
    train it as they train the pooled head, and the same arithmetic runs in the exported graph.
    Returns ``(points (B, 2N) in network units, cell logits (B, N, H, W))``.
    """

    def __init__(self, fine_channels: int, coarse_channels: int, num_points: int, hidden: int = 128):
        super().__init__()
        self.num_points = num_points
        self.fuse = nn.Sequential(
            ConvBNAct(fine_channels + coarse_channels, hidden, kernel_size=1),
            ConvBNAct(hidden, hidden, kernel_size=3, groups=hidden),
        )
        # channels: N scores, then N x offsets, then N y offsets
        self.out = nn.Conv2d(hidden, 3 * num_points, kernel_size=1)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="nearest")
        maps = self.out(self.fuse(torch.cat([fine, coarse], dim=1)))
        n, (h, w) = self.num_points, maps.shape[-2:]
        logits = maps[:, :n]
        flat = maps.flatten(2)  # (B, 3N, HW)
        prob = flat[:, :n].softmax(dim=-1)
        cx, cy = cell_centres(int(h), int(w), maps.dtype, maps.device)
        x = (prob * (cx + flat[:, n : 2 * n] / w)).sum(dim=-1)
        y = (prob * (cy + flat[:, 2 * n :] / h)).sum(dim=-1)
        return torch.stack([x, y], dim=-1).reshape(-1, 2 * n), logits


def cell_centres(h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y of the centres of an ``h x w`` grid's cells, row-major ``(h*w,)`` each, in network
    units (crop edges at -0.5 and +0.5). Built from Python ints, so an exported graph holds them
    as constants."""
    xs = [(j + 0.5) / w - 0.5 for j in range(w)]
    ys = [(i + 0.5) / h - 0.5 for i in range(h)]
    cx = torch.tensor([xs[k % w] for k in range(h * w)], dtype=dtype, device=device)
    cy = torch.tensor([ys[k // w] for k in range(h * w)], dtype=dtype, device=device)
    return cx, cy


class ASMNet(nn.Module):
    """Face landmarks and head pose from one face crop.

    Args:
        num_points: number of landmarks N (68 or 98); the landmark head has 2N outputs.
        width: MobileNetV2 width multiplier (channels rounded to multiples of 8).
        arch: ``"asmnet"`` (MobileNetV2 up to block_15, six fused taps, 536 features at width 1)
            or ``"mnv2"`` (the full MobileNetV2 up to the 1280-channel conv, the paper's baseline).
        dropout: dropout probability on the pooled features before the heads that read them.
        head: the landmark head, ``"pooled"`` (linear, the paper's) or ``"grid"``
            (:class:`GridHead` on the stride-16 map; ``asmnet`` arch only).

    ``forward`` takes float32 ``(B, 3, H, W)`` RGB in 0..255 and returns ``(landmarks, pose)``
    of shapes ``(B, 2N)`` and ``(B, 3)``; a grid-head model in training mode also returns its cell
    logits ``(B, N, H/16, W/16)`` for the loss's cell term.
    """

    def __init__(
        self,
        num_points: int = 68,
        width: float = 1.0,
        arch: str = "asmnet",
        dropout: float = 0.3,
        head: str = "pooled",
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(arch_head_problem(arch, head))
        if int(num_points) != num_points or num_points < 1:
            raise ValueError(f"num_points must be a positive integer, got {num_points!r}")
        if not width > 0:
            raise ValueError(f"width must be positive, got {width!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if arch_head_problem(arch, head):
            raise ValueError(arch_head_problem(arch, head))
        self.num_points = int(num_points)
        self.width = float(width)
        self.arch = arch
        self.dropout_rate = float(dropout)
        self.head = head

        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        stem = make_divisible(_STEM_CHANNELS * width)
        self.stem = ConvBNAct(3, stem, kernel_size=3, stride=2)
        stages = MNV2_STAGES if arch == "mnv2" else MNV2_STAGES[:-1]
        blocks: list[nn.Module] = []
        in_ch = stem
        for t, c, n, s in stages:
            out_ch = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)

        if arch == "asmnet":
            self.taps: tuple[int, ...] = ASMNET_TAPS
            self.head_conv: nn.Module | None = None
            self.tap_channels: tuple[int, ...] = tuple(self.blocks[i].out_channels for i in self.taps)
        else:
            self.taps = ()
            last = make_divisible(_LAST_CHANNELS * max(1.0, width))
            self.head_conv = ConvBNAct(in_ch, last, kernel_size=1)
            self.tap_channels = (last,)
        self.num_features = sum(self.tap_channels)

        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(self.dropout_rate)
        self.landmark_head: nn.Linear | None = None
        self.grid_head: GridHead | None = None
        if head == "grid":
            fine, coarse = (self.blocks[i].out_channels for i in GRID_TAPS)
            self.grid_head = GridHead(fine, coarse, self.num_points)
        else:
            self.landmark_head = nn.Linear(self.num_features, 2 * self.num_points)
        self.pose_head = nn.Linear(self.num_features, 3)
        self._init_weights()

    @property
    def config(self) -> dict[str, Any]:
        """The arguments that rebuild this model with :func:`build_model`."""
        return {
            "num_points": self.num_points,
            "width": self.width,
            "arch": self.arch,
            "dropout": self.dropout_rate,
            "head": self.head,
        }

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        if self.grid_head is not None:  # start with flat scores and zero offsets: the grid's centre
            nn.init.normal_(self.grid_head.out.weight, 0.0, 1e-3)
            nn.init.zeros_(self.grid_head.out.bias)

    @torch.no_grad()
    def set_landmark_bias(self, mean_shape: torch.Tensor, weight_std: float = 1e-3) -> None:
        """Start the landmark head at ``mean_shape`` (2N values, ``x0, y0, x1, ...``).

        The bias becomes the mean shape and the weights are redrawn with a small ``weight_std``,
        so the untrained network predicts about the mean shape for every face. A grid head is left
        as it is: a per-channel bias cannot place points (its cell scores learn where they are).
        """
        if self.landmark_head is None:
            return
        mean_shape = torch.as_tensor(mean_shape, dtype=torch.float32).reshape(-1)
        bias = self.landmark_head.bias
        if mean_shape.numel() != bias.numel():
            raise ValueError(f"mean_shape has {mean_shape.numel()} values; the head needs {bias.numel()}")
        bias.copy_(mean_shape.to(bias.device))
        nn.init.normal_(self.landmark_head.weight, 0.0, weight_std)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map 0..255 RGB pixels to ImageNet-normalised values."""
        return (x / 255.0 - self.mean) / self.std

    def _block_outputs(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Outputs of the tapped blocks (and the grid head's), by block index; mnv2: ``{-1: map}``."""
        x = self.stem(self.normalize(x))
        if self.head_conv is not None:
            return {-1: self.head_conv(self.blocks(x))}
        keep = set(self.taps) | (set(GRID_TAPS) if self.grid_head is not None else set())
        outs: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in keep:
                outs[i] = x
        return outs

    def _pooled(self, outs: dict[int, torch.Tensor]) -> torch.Tensor:
        maps = [outs[-1]] if self.head_conv is not None else [outs[i] for i in self.taps]
        return torch.cat([self.pool(f).flatten(1) for f in maps], dim=1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps before pooling: ASMNet's six taps, or mnv2's 1280-channel map.

        ``x`` is raw 0..255 RGB, as for :meth:`forward`.
        """
        outs = self._block_outputs(x)
        return [outs[-1]] if self.head_conv is not None else [outs[i] for i in self.taps]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled, concatenated features ``(B, num_features)`` before dropout."""
        return self._pooled(self._block_outputs(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = self._block_outputs(x)
        feats = self.drop(self._pooled(outs))
        pose = self.pose_head(feats)
        if self.grid_head is None:
            return self.landmark_head(feats), pose
        points, logits = self.grid_head(*(outs[i] for i in GRID_TAPS))
        return (points, pose, logits) if self.training else (points, pose)


def build_model(config: dict[str, Any]) -> ASMNet:
    """Rebuild a model from :attr:`ASMNet.config` (as stored in checkpoints).

    Missing keys take the defaults of :class:`ASMNet`; unknown keys or bad values raise
    :class:`asmnet.errors.ModelError`.
    """
    from ..errors import ModelError

    known = {"num_points", "width", "arch", "dropout", "head"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ModelError(None, f"unknown model config keys: {', '.join(unknown)}")
    try:
        return ASMNet(**config)
    except (TypeError, ValueError) as exc:
        raise ModelError(None, f"bad model config {config!r}: {exc}") from None


def head_l2(model: nn.Module) -> torch.Tensor:
    """Sum of squares of the linear heads' weights and biases (unscaled; the loss applies 0.01x).

    Accepts a model wrapped by DistributedDataParallel (uses ``model.module``).
    """
    net = getattr(model, "module", model)
    heads = [h for h in (net.landmark_head, net.pose_head) if h is not None]
    params = [p for head in heads for p in (head.weight, head.bias)]
    return torch.stack([p.pow(2).sum() for p in params]).sum()
