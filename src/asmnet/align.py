"""Aligned face crops: each face warped by a similarity (rotation, scale, shift) onto a template.

Templates (``FaceAligner.align(image, template=..., size=...)``, ``asmnet align --template``):

* ``"arcface"`` (default size 112): the 5-point template of ArcFace / InsightFace recognition
  models (eye centres, nose tip, mouth corners from the 68 points), fitted in least squares as
  InsightFace's ``norm_crop`` does; sizes that are multiples of 112 scale it, others follow
  InsightFace's 128-px rule (scaled from 128, shifted 8 px right).
* ``"ffhq"`` (default 256): the FFHQ dataset's crop (Karras et al. 2019): an oriented square
  from the eye and mouth centres, twice the eye distance or 1.8 x the eye-to-mouth distance, its
  centre 0.1 of the eye-to-mouth vector below the eyes; outside the picture it is mirrored
  (FFHQ also blurs that border, which is left out here).
* ``"dlib"`` (default 150, padding 0.2): like dlib's ``get_face_chip``: the 51 inner points (all
  but the jaw) fitted to a mean face in a unit square, padded by 0.2 of it on each side. The mean
  face is the model's own shape model mean (not dlib's table), so chips are alike, not identical.

Matrices map OpenCV pixel positions of the image (first pixel's centre at 0) to those of the crop:
``cv2.warpAffine(image, matrix, (size, size))`` makes the crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .errors import SettingError
from .geometry import similarity_transform, transform_points
from .markup import Markup, markup_for

TEMPLATES = ("arcface", "ffhq", "dlib")
DEFAULT_SIZES = {"arcface": 112, "ffhq": 256, "dlib": 150}
CROP_SIZES = (16, 4096)  # the crop sides (pixels) FaceAligner.align and asmnet align --size take
DLIB_PADDING = 0.2
# InsightFace's ArcFace template for 112 x 112 crops (pixel positions): the eye on the image's
# left, the other eye, the nose tip, the mouth corner on the image's left, the other corner.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]])


@dataclass
class AlignedFace:
    """One aligned crop: ``image`` (size, size, 3) in the channel order asked for (RGB unless
    ``channel_order="bgr"``), ``matrix`` the 2x3 warp from image to crop pixels (OpenCV's
    convention), ``landmarks`` the face's points in the crop (in the aligner's ``pixel_origin``),
    ``face`` the face in the picture, and the ``template`` used."""

    image: np.ndarray
    matrix: np.ndarray
    landmarks: np.ndarray
    face: Any
    template: str

    def __repr__(self) -> str:
        """One short line (the crop's pixels are in ``image``)."""
        side = self.image.shape[0] if getattr(self.image, "ndim", 0) >= 2 else "?"
        return f"AlignedFace({self.template!r}, {side}x{side} crop, face={self.face!r})"

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """JSON-ready: the face's record plus the matrix and the crop's landmarks."""
        return {**self.face.to_dict(decimals), "template": self.template, "size": int(self.image.shape[0]),
                "matrix": np.round(self.matrix, 6).tolist(),
                "crop_landmarks": np.round(self.landmarks, decimals).tolist()}


def check_template(template: Any, size: Any) -> int:
    """The crop side for ``template`` (``size`` or the template's default); SettingError (a
    DataError and a ValueError) for an unknown template or a size that is not a whole number in
    :data:`CROP_SIZES`."""
    if not isinstance(template, str) or template not in TEMPLATES:
        raise SettingError(None, f"unknown template {template!r} (choose from: {', '.join(TEMPLATES)})")
    if size is None:
        return DEFAULT_SIZES[template]
    whole = isinstance(size, (int, np.integer)) or (isinstance(size, (float, np.floating)) and float(size).is_integer())
    low, high = CROP_SIZES
    if isinstance(size, bool) or not whole or not low <= size <= high:
        raise SettingError(None, f"crop size must be a whole number of pixels in {low}..{high}, got {size!r}")
    return int(size)


def _markup(points: np.ndarray) -> Markup:
    """The scheme of 68 or 98 landmarks; ValueError for another count."""
    if len(points) not in (68, 98):
        raise ValueError(f"aligned crops need 68 or 98 landmarks, got {len(points)}")
    return markup_for(len(points))


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners (5, 2) of 68- or 98-point landmarks; ValueError
    for another number of points."""
    pts = np.asarray(landmarks, dtype=np.float64)
    markup = _markup(pts)
    mouth_l, mouth_r = markup.mouth_corners
    return np.stack([pts[list(markup.left_eye)].mean(0), pts[list(markup.right_eye)].mean(0),
                     pts[markup.nose_tip], pts[mouth_l], pts[mouth_r]])


def dlib_template(mean_shape: np.ndarray) -> np.ndarray:
    """The inner points of a mean face (N, 2) moved into the unit square (aspect kept, centred)."""
    mean = np.asarray(mean_shape, dtype=np.float64)
    inner = mean[list(_markup(mean).inner_points())]
    low, high = inner.min(0), inner.max(0)
    unit = (inner - low) / (high - low).max()
    return unit + (1.0 - (high - low) / (high - low).max()) / 2.0


def template_matrix(landmarks: np.ndarray, template: str, size: int, mean_shape: np.ndarray | None = None) -> np.ndarray:
    """The 2x3 matrix from image pixels (OpenCV's convention) to the ``size`` crop of ``template``
    for a face with these landmarks (OpenCV's convention). ``mean_shape`` (N, 2): the "dlib"
    template's mean face (the model's shape model mean)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if template == "arcface":
        ratio, shift = (size / 112.0, 0.0) if size % 112 == 0 else (size / 128.0, 8.0 * size / 128.0)
        return similarity_transform(five_points(pts), ARCFACE_112 * ratio + [shift, 0.0])
    if template == "ffhq":
        eye_l, eye_r, _, mouth_l, mouth_r = five_points(pts)
        eye_avg, mouth_avg = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
        eye_to_eye, eye_to_mouth = eye_r - eye_l, mouth_avg - eye_avg
        x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
        x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
        y = np.flipud(x) * [-1, 1]
        c = eye_avg + eye_to_mouth * 0.1
        quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # top-left, bottom-left, ...
        edges = np.array([[0, 0], [0, size], [size, size], [size, 0]], dtype=np.float64) - 0.5
        return similarity_transform(quad, edges)
    if template == "dlib":
        if mean_shape is None:
            raise ValueError("the dlib template needs the model's mean shape")
        unit = dlib_template(mean_shape)
        dst = (DLIB_PADDING + unit) / (2 * DLIB_PADDING + 1) * size - 0.5
        return similarity_transform(pts[list(_markup(pts).inner_points())], dst)
    raise ValueError(f"unknown template {template!r} (choose from: {', '.join(TEMPLATES)})")


def aligned_crops(
    pixels: np.ndarray, faces: list, template: str, size: int, pixel_origin: float = 0.0,
    mean_shape: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(crop, matrix, landmarks in the crop) of each face, cropped from ``pixels`` as they are
    (any channel layout; the caller converts the crop). Landmarks in and out are in the
    ``pixel_origin`` convention; matrices in OpenCV's."""
    border = cv2.BORDER_REFLECT if template == "ffhq" else cv2.BORDER_CONSTANT
    out = []
    for face in faces:
        opencv = np.asarray(face.landmarks, dtype=np.float64) - pixel_origin
        matrix = template_matrix(opencv, template, size, mean_shape)
        crop = cv2.warpAffine(pixels, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
        out.append((crop, matrix, transform_points(opencv, matrix) + pixel_origin))
    return out
