"""Crops cut again around the network's own points, as the second look cuts them.

The ground-truth box of a validation face tells the network where the face's extreme points are:
the crop's border sits ``crop_scale`` outside them (benchmarks/box_leak.py). Users never have that
box; their second look crops from the network's own points, which repeats its mistakes.
:func:`recrop_tensors` measures that on validation faces (``val_nme_recrop``);
:func:`recrop_batch` trains on it (``TrainConfig.recrop``).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import from_normalised, transform_points
from ..markup import markup_for
from .augment import AugmentConfig, make_sample, sample_crop
from .config import TrainConfig
from .data import FaceRegion

# a re-crop side outside this range (in units of the crop it is cut from) comes from a prediction
# that is no face yet (early in a run from scratch); it is clamped
SIDE_RANGE = (0.5, 2.0)


def recrop_tensors(val: list[FaceRegion], pred: np.ndarray, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops (F, 3, S, S) from the tight box of each face's own predicted points ``pred`` (F, 2N;
    network units of its ground-truth-box crop), as the second look crops, and their targets (F, 2N).

    The ground-truth box tells the network where the face's extreme points are; users never have
    it. NME on these crops (``val_nme_recrop``) is what a crop from the network's own answer
    gives (benchmarks/box_leak.py measures the same on packages)."""
    markup, none, size = markup_for(cfg.points), AugmentConfig.none(), cfg.input_size
    crops, targets = [], []
    for r, units in zip(val, pred.reshape(len(val), cfg.points, 2)):
        rng = np.random.default_rng(0)  # no jitter is drawn; the generator is only a formality
        first = sample_crop(r.points, size, rng, none, cfg.crop_scale)
        own = transform_points(from_normalised(units, size), cv2.invertAffineTransform(first.matrix))
        crop, target, _ = make_sample(r.image, r.points, None, size, markup, rng, none, cfg.crop_scale,
                                      box_points=own)
        crops.append(crop.transpose(2, 0, 1))
        targets.append(target.reshape(-1))
    return torch.from_numpy(np.stack(crops)), torch.from_numpy(np.stack(targets).astype(np.float32))


def recrop_batch(crops: torch.Tensor, targets: torch.Tensor, pred: torch.Tensor, crop_scale: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops (B, C, S, S) resampled around the tight box of the predicted points ``pred`` (B, 2N,
    network units: crop edges at -0.5 and +0.5), with the side ``crop_scale`` x the box's larger
    side as the second look cuts them, and ``targets`` (B, 2N) in the new crops' units.

    The new crop is cut from the old one (bilinear; black beyond its edges, as the warp of a
    training crop is black beyond the image), so it needs no image."""
    b = len(crops)
    p = pred.detach().reshape(b, -1, 2).to(crops.dtype)
    lo, hi = p.amin(1), p.amax(1)
    centre = (lo + hi) / 2.0
    side = (crop_scale * (hi - lo).amax(1)).clamp(*SIDE_RANGE)
    # affine_grid maps the output's [-1, 1] to the input's; network units are half of those
    theta = torch.zeros(b, 2, 3, dtype=crops.dtype, device=crops.device)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = 2.0 * centre
    grid = F.affine_grid(theta, list(crops.shape), align_corners=False)
    again = F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    moved = (targets.reshape(b, -1, 2) - centre[:, None].to(targets.dtype)) / side[:, None, None].to(targets.dtype)
    return again, moved.reshape(b, -1)
