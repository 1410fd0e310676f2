"""Boxes, crop warps and point transforms, in one pixel convention.

OpenCV's convention throughout: pixel centres sit at integer coordinates, so an image of width W
spans [-0.5, W - 0.5]. A crop is one 2x3 affine matrix from image to an S x S network input; the
same matrix maps points, and its inverse maps predictions back. Network targets are normalised
crop coordinates: ``(u + 0.5) / S - 0.5``, so the crop's edges are at -0.5 and +0.5.
"""

from __future__ import annotations

import cv2
import numpy as np

# Side of the square crop as a multiple of the tight landmark box's larger side. The training
# crops jitter around it; detector boxes are calibrated to it (see detection/calibration.py).
CROP_SCALE = 1.3


def tight_box(points: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) of the smallest axis-aligned box holding the points (N, 2)."""
    pts = np.asarray(points, dtype=np.float64)
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])


def box_center_size(box: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (2,) and larger side of a box (x1, y1, x2, y2)."""
    box = np.asarray(box, dtype=np.float64)
    center = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    return center, float(max(box[2] - box[0], box[3] - box[1]))


def crop_matrix(
    center: np.ndarray, side: float, out_size: int, angle_deg: float = 0.0, flip: bool = False
) -> np.ndarray:
    """2x3 affine taking the square (centre, side) of an image to an out_size crop.

    ``angle_deg`` rotates the content counter-clockwise as displayed (as
    ``cv2.getRotationMatrix2D`` does); ``flip`` mirrors the crop horizontally afterwards.
    """
    center = np.asarray(center, dtype=np.float64)
    if not (np.isfinite(side) and side > 0 and np.isfinite(out_size / side)):
        raise ValueError(f"crop side must be positive and finite, got {side}")
    if not (np.all(np.abs(center) < 1e9) and np.isfinite(angle_deg)) or out_size < 1:  # abs(nan) < x is False
        raise ValueError(f"bad crop: centre {center.tolist()}, angle {angle_deg}, size {out_size}")
    # built in float64 (cv2.getRotationMatrix2D takes a float32 centre: 0.06 px off far from 0)
    a, scale = np.deg2rad(angle_deg), out_size / side
    m = np.array([[scale * np.cos(a), scale * np.sin(a), 0.0], [-scale * np.sin(a), scale * np.cos(a), 0.0]])
    m[:, 2] = (out_size - 1) / 2.0 - m[:, :2] @ center
    if flip:
        m[0] = -m[0]
        m[0, 2] += out_size - 1
    return m


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to points (..., 2)."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def warp(image: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    """Warp an image into an out_size x out_size crop (black outside the image)."""
    return cv2.warpAffine(
        image, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def to_normalised(crop_points: np.ndarray, out_size: int) -> np.ndarray:
    """Crop pixel coordinates -> network units (crop edges at -0.5 and +0.5)."""
    return (np.asarray(crop_points, dtype=np.float64) + 0.5) / out_size - 0.5


def from_normalised(units: np.ndarray, out_size: int) -> np.ndarray:
    """Network units -> crop pixel coordinates."""
    return (np.asarray(units, dtype=np.float64) + 0.5) * out_size - 0.5


def face_crop_matrix(box: np.ndarray, out_size: int, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """The inference/evaluation crop of a face box in the training convention (no jitter)."""
    center, size = box_center_size(box)
    return crop_matrix(center, crop_scale * size, out_size)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift; no reflection) that maps the points
    ``src`` (K, 2) closest to ``dst`` (K, 2) in least squares (Umeyama 1991). K >= 2."""
    return similarity_transforms(np.asarray(src, dtype=np.float64)[None], dst)[0]


def similarity_transforms(sources: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """:func:`similarity_transform` of each of ``sources`` (B, K, 2) onto ``target`` (K, 2, or one
    per source: B, K, 2): (B, 2, 3). ``weights`` (B, K) of 0 / 1 leave points out (padding of
    parts with fewer points, so that parts of several sizes take one call).

    In 2-D the least-squares scaled rotation [[a, -b], [b, a]] has a closed form (Umeyama's SVD
    gives the same); the refiner and the shape regression frame every face part with it, so it
    is written with few NumPy calls."""
    sources, target = np.asarray(sources, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if weights is None:
        source_mean, target_mean = sources.mean(axis=1), target.mean(axis=-2)
        s = sources - source_mean[:, None]
    else:
        w = np.asarray(weights, dtype=np.float64)[..., None]
        count = w.sum(axis=1)
        source_mean, target_mean = (w * sources).sum(axis=1) / count, (w * target).sum(axis=-2) / count
        s = (sources - source_mean[:, None]) * w
    d = target - target_mean[..., None, :]
    norm = np.einsum("bkj,bkj->b", s, s)
    if not np.all(norm > 0):
        raise ValueError("similarity_transform: the source points coincide")
    a = (s * d).sum(axis=(1, 2)) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(axis=1) / norm
    out = np.empty((len(sources), 2, 3))
    out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = a, -b, b, a
    out[:, :, 2] = target_mean - np.einsum("bij,bj->bi", out[:, :, :2], source_mean)
    return out


def transform_each(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Each face's points (K, N, 2) under its own 2x3 matrix (K, 2, 3): :func:`transform_points`
    for a batch."""
    return np.einsum("knj,kij->kni", points, matrices[:, :, :2]) + matrices[:, None, :, 2]


def invert_affines(matrices: np.ndarray) -> np.ndarray:
    """The inverses (B, 2, 3) of 2x3 affines (B, 2, 3) (closed form: cheaper than np.linalg.inv
    for the few matrices of one face)."""
    m = np.asarray(matrices, dtype=np.float64)
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    out = np.empty(m.shape)
    out[:, 0, 0], out[:, 0, 1] = m[:, 1, 1] / det, -m[:, 0, 1] / det
    out[:, 1, 0], out[:, 1, 1] = -m[:, 1, 0] / det, m[:, 0, 0] / det
    out[:, :, 2] = -np.einsum("bij,bj->bi", out[:, :, :2], m[:, :, 2])
    return out


def rotate_on_canvas(image: np.ndarray, points: np.ndarray, angle: float, origin: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The image turned ``angle`` degrees counter-clockwise as displayed on a canvas holding all of
    it (black corners), and the points (``origin`` = the first pixel's centre in their
    convention) turned with it. Angle 0 returns both unchanged."""
    if angle == 0:
        return image, points
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    corners = transform_points(np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float), m)
    lo, hi = corners.min(0), corners.max(0)
    m[:, 2] -= lo
    size = tuple(int(np.ceil(v)) + 1 for v in hi - lo)
    out = cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return out, transform_points(np.asarray(points, dtype=np.float64) - origin, m) + origin
