"""Training crops and augmentation (NumPy + OpenCV).

One affine warp per sample: crop box jitter (scale, shift), rotation and horizontal flip are all
in one 2x3 matrix, and the points go through the same matrix (then the flip permutation). Pose
labels follow the geometry exactly: rotation maps R to Rz(a) R, a flip gives (-yaw, pitch, -roll).
Photometric changes (colour, blur, grey, low resolution, occlusion) act on the crop afterwards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..geometry import (
    CROP_SCALE,
    box_center_size,
    crop_matrix,
    tight_box,
    to_normalised,
    transform_points,
    warp,
)
from ..markup import Markup
from ..pose import flip_pose, rotate_pose_in_image


@dataclass
class AugmentConfig:
    """Ranges of the random changes; ``AugmentConfig.none()`` turns them all off."""

    scale: float = 0.12  # crop side x U(1 - scale, 1 + scale)
    shift: float = 0.08  # crop centre + U(-shift, shift) x side, per axis
    rotation: float = 30.0  # max |angle| in degrees
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    color_prob: float = 0.8  # brightness / contrast / saturation
    blur_prob: float = 0.15
    gray_prob: float = 0.1
    lowres_prob: float = 0.1  # down- then up-sample (small faces, video frames)
    occlusion_prob: float = 0.15  # one random grey/noise patch
    # a share of crops jittered as widely as a detector's box is off, the rest by scale / shift:
    # narrow jitter fits re-crops from predicted points, the wide draws keep poor boxes usable
    wide_prob: float = 0.0
    wide_scale: float = 0.12
    wide_shift: float = 0.08

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CropTransform:
    """A sampled crop: the image->crop matrix and whether it mirrors."""

    matrix: np.ndarray
    flip: bool
    angle: float


def sample_crop(
    points: np.ndarray,
    out_size: int,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    crop_scale: float = CROP_SCALE,
) -> CropTransform:
    """Jittered crop around the tight box of the points."""
    center, size = box_center_size(tight_box(points))
    # drawn only when asked for, so configs without wide draws keep their random streams
    wide = cfg.wide_prob > 0 and rng.random() < cfg.wide_prob
    scale, shift = (cfg.wide_scale, cfg.wide_shift) if wide else (cfg.scale, cfg.shift)
    side = crop_scale * size * rng.uniform(1 - scale, 1 + scale)
    center = center + rng.uniform(-shift, shift, size=2) * side
    angle = rng.uniform(-cfg.rotation, cfg.rotation) if rng.random() < cfg.rotation_prob else 0.0
    flip = bool(rng.random() < cfg.flip_prob)
    return CropTransform(crop_matrix(center, side, out_size, angle, flip), flip, float(angle))


def crop_points(points: np.ndarray, t: CropTransform, markup: Markup) -> np.ndarray:
    """Points in crop pixels, re-ordered by the flip permutation when the crop mirrors."""
    out = transform_points(points, t.matrix)
    return out[markup.flip_array()] if t.flip else out


def crop_pose(pose: np.ndarray, t: CropTransform) -> np.ndarray:
    """Pose label of the face as it appears in the crop."""
    if np.any(np.isnan(pose)):
        return pose
    out = rotate_pose_in_image(pose, t.angle) if t.angle else np.asarray(pose, dtype=np.float64)
    return flip_pose(out) if t.flip else out


def photometric(crop: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Colour, blur, grey, low-resolution and occlusion changes of a uint8 BGR crop."""
    img = crop
    if rng.random() < cfg.color_prob:
        # saturation as a blend with grey, then one per-channel lookup table for contrast,
        # brightness and white balance (uint8 all the way: fast at 224 px)
        gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        sat = rng.uniform(0.6, 1.4)
        img = cv2.addWeighted(img, sat, gray, 1.0 - sat, 0.0)
        mean = float(img.mean())
        contrast, gain, offset = rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3), rng.uniform(-20, 20)
        levels = np.arange(256, dtype=np.float32)
        luts = [((levels - mean) * contrast + mean) * gain * wb + offset for wb in rng.uniform(0.9, 1.1, size=3)]
        lut = np.clip(np.stack(luts, axis=1), 0, 255).astype(np.uint8).reshape(256, 1, 3)
        img = cv2.LUT(img, lut)
    if rng.random() < cfg.gray_prob:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    size = img.shape[0]
    if rng.random() < cfg.lowres_prob:
        small = max(8, int(size * rng.uniform(0.25, 0.6)))
        img = cv2.resize(cv2.resize(img, (small, small), interpolation=cv2.INTER_AREA), (size, size))
    if rng.random() < cfg.blur_prob:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), 0)
    if rng.random() < cfg.occlusion_prob:
        w, h = (rng.uniform(0.15, 0.4, size=2) * size).astype(int)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        img[y : y + h, x : x + w] = rng.integers(0, 256, size=(h, w, 3) if rng.random() < 0.5 else 3)
    return img


def make_sample(
    image_bgr: np.ndarray,
    points: np.ndarray,
    pose: np.ndarray | None,
    out_size: int,
    markup: Markup,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    crop_scale: float = CROP_SCALE,
    box_points: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training sample: RGB uint8 crop (S, S, 3), targets (N, 2) in network units, pose (3,).

    The crop is drawn around the tight box of ``box_points`` when given (e.g. a prediction),
    else of ``points``; the targets are always ``points``."""
    t = sample_crop(points if box_points is None else box_points, out_size, rng, cfg, crop_scale)
    crop = photometric(warp(image_bgr, t.matrix, out_size), rng, cfg)
    targets = to_normalised(crop_points(points, t, markup), out_size)
    label = np.full(3, np.nan) if pose is None else crop_pose(np.asarray(pose, dtype=np.float64), t)
    return np.ascontiguousarray(crop[:, :, ::-1]), targets, label


def augmented_shapes(
    point_sets: list[np.ndarray],
    out_size: int,
    markup: Markup,
    cfg: AugmentConfig,
    passes: int,
    seed: int,
    crop_scale: float = CROP_SCALE,
) -> np.ndarray:
    """Training targets as the network sees them, for fitting the shape model (no pixels warped)."""
    rng = np.random.default_rng(seed)
    shapes = [
        to_normalised(crop_points(pts, sample_crop(pts, out_size, rng, cfg, crop_scale), markup), out_size)
        for _ in range(passes)
        for pts in point_sets
    ]
    return np.stack(shapes).reshape(len(shapes), -1)
