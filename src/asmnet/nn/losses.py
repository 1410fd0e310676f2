"""ASM-LOSS (Fard et al. 2021) and its plain-MSE baseline.

    L = D(y_hat, y) + w(e) * D(y_hat, ASM(y)) + MSE(p_hat / 90, p / 90) + c * L2(heads)
        [+ k * CE(cell scores, cell of y)   with a grid head]
        [+ t * D(y_hat, y_teacher)          with teachers: self-distillation]

D is the point distance (MSE as in the paper; L1 or Wing as options). ASM(y) projects the ground truth
onto the shape model, a smoothed target; w(e) moves weight from it to the exact target over the
planned epochs. ``kind="mse"`` sets w = 0 (the paper's "_nr" baseline). Pose is in degrees / 90
so that its term is on the scale of the landmark terms; faces without a pose label are masked.
A grid head's cell term (cross-entropy of the cell that holds each ground-truth point) makes each
landmark's scores peak at its cell, so that the points come from local offsets, as in PIPNet.
The teacher term pulls toward an ensemble of our own models' points on the same crop
(:mod:`asmnet.training.distill`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import LOSS_KINDS, POINT_LOSSES
from ..shape_model import ShapeModel
from .model import head_l2

POSE_SCALE = 90.0
# Wing loss (Feng et al. 2018) in network units (crop side = 1): the paper's w = 10, eps = 2 pixels
# of a 256-px crop. Errors under w get a log curve (steeper near 0 than L1, so the small and medium
# errors that make up the mean NME keep pulling); above w it is L1 shifted to join continuously.
WING_WIDTH = 10.0 / 256
WING_CURVATURE = 2.0 / 256


def wing(diff: torch.Tensor, width: float = WING_WIDTH, curvature: float = WING_CURVATURE) -> torch.Tensor:
    """Element-wise Wing loss of coordinate differences (same shape as ``diff``)."""
    x = diff.abs()
    joint = width - width * math.log1p(width / curvature)  # makes the two pieces meet at |x| = width
    return torch.where(x < width, width * torch.log1p(x / curvature), x - joint)


def cell_targets(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Row-major index ``(B, N)`` of the grid cell holding each point (network units, crop edges
    at -0.5 and +0.5; points outside the crop take the nearest edge cell)."""
    xy = points.reshape(points.shape[0], -1, 2)
    col = ((xy[..., 0] + 0.5) * width).floor().clamp(0, width - 1).long()
    row = ((xy[..., 1] + 0.5) * height).floor().clamp(0, height - 1).long()
    return row * width + col


def asm_weight(epoch: int, total_epochs: int) -> float:
    """w(e): 2.0 in the first third of the planned epochs, 1.0 in the second, 0.5 after."""
    if epoch < total_epochs / 3:
        return 2.0
    if epoch < 2 * total_epochs / 3:
        return 1.0
    return 0.5


class ASMProjector(nn.Module):
    """The ASM operator of a :class:`ShapeModel` on torch tensors (B, 2N)."""

    def __init__(self, shape_model: ShapeModel):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(shape_model.mean, dtype=torch.float32))
        self.register_buffer("components", torch.as_tensor(shape_model.components, dtype=torch.float32))
        self.register_buffer("limits", torch.as_tensor(shape_model.limits, dtype=torch.float32))

    def forward(self, shapes: torch.Tensor) -> torch.Tensor:
        b = (shapes - self.mean) @ self.components
        b = torch.maximum(torch.minimum(b, self.limits), -self.limits)
        return self.mean + b @ self.components.T


class ASMLoss(nn.Module):
    """Landmark + smoothed-landmark + pose (+ head L2) loss; see the module docstring."""

    def __init__(
        self,
        shape_model: ShapeModel,
        kind: str = "asm",
        point_loss: str = "mse",
        pose_weight: float = 1.0,
        head_l2_weight: float = 0.0,
        cell_weight: float = 0.0,
        teacher_weight: float = 0.0,
    ):
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {kind!r}")
        if point_loss not in POINT_LOSSES:
            raise ValueError(f"point loss must be one of {POINT_LOSSES}, got {point_loss!r}")
        self.kind, self.point_loss = kind, point_loss
        self.pose_weight, self.head_l2_weight, self.cell_weight = pose_weight, head_l2_weight, cell_weight
        self.teacher_weight = teacher_weight
        self.asm = ASMProjector(shape_model)

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = pred - target
        if self.point_loss == "mse":
            return diff.pow(2).mean()
        if self.point_loss == "wing":
            return wing(diff).mean()
        return diff.abs().mean()

    def forward(
        self,
        pred_points: torch.Tensor,
        pred_pose: torch.Tensor,
        points: torch.Tensor,
        pose: torch.Tensor,
        epoch: int,
        total_epochs: int,
        model: nn.Module | None = None,
        cell_logits: torch.Tensor | None = None,
        teacher_points: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts (floats, for logging). ``cell_logits`` ``(B, N, H, W)``: a grid
        head's scores, for the cell term (weight ``cell_weight``); ``teacher_points`` ``(B, 2N)``:
        the teachers' points on the same crops, for the teacher term (weight ``teacher_weight``)."""
        exact = self.distance(pred_points, points)
        total = exact
        parts = {"points": float(exact.detach())}
        if self.kind == "asm":
            with torch.no_grad():
                smooth_target = self.asm(points)
            smooth = self.distance(pred_points, smooth_target)
            total = total + asm_weight(epoch, total_epochs) * smooth
            parts["asm"] = float(smooth.detach())
        labelled = ~torch.isnan(pose).any(dim=1)
        if labelled.any():
            pose_term = (pred_pose[labelled] - pose[labelled]).div(POSE_SCALE).pow(2).mean()
            total = total + self.pose_weight * pose_term
            parts["pose"] = float(pose_term.detach())
        if cell_logits is not None and self.cell_weight:
            b, n, h, w = cell_logits.shape
            cell = F.cross_entropy(cell_logits.reshape(b * n, h * w), cell_targets(points, h, w).reshape(-1))
            total = total + self.cell_weight * cell
            parts["cell"] = float(cell.detach())
        if teacher_points is not None and self.teacher_weight:
            taught = self.distance(pred_points, teacher_points)
            total = total + self.teacher_weight * taught
            parts["teacher"] = float(taught.detach())
        if self.head_l2_weight and model is not None:
            total = total + self.head_l2_weight * head_l2(model)
        parts["total"] = float(total.detach())
        return total, parts
