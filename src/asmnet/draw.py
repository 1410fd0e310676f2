"""Drawing of landmarks, face boxes, scores and head-pose axes with OpenCV (no torch, no matplotlib).

Pose axes follow the 300W-LP convention of :mod:`asmnet.pose`: ``R = rotation_matrix(yaw, pitch,
roll)`` maps the model frame (x to the image's right, y up, z towards the camera) to the camera
frame, as in 300W-LP's projection ``s * R @ shape + t`` followed by flipping y for the image. An
axis v is therefore drawn as the orthographic projection ``(R @ v)`` -> ``(x, -y)`` in pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import DataError
from .fileio import write_atomic
from .markup import MARKUPS
from .pose import rotation_matrix

Color = tuple[int, int, int]

# BGR colours of the pose axes: x red, y green, z (nose direction) blue.
AXIS_COLORS: dict[str, Color] = {"x": (0, 0, 255), "y": (0, 255, 0), "z": (255, 0, 0)}
_UNIT_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}
_BOX_COLOR: Color = (255, 200, 0)  # light blue
DEFAULT_POINT_COLOR: Color = (0, 255, 255)  # yellow, distinct from the axes
_SHIFT = 4  # sub-pixel bits for anti-aliased drawing
_SCALE = 1 << _SHIFT


def pose_axes_2d(
    pose: Sequence[float] | np.ndarray, center: Sequence[float], length: float
) -> dict[str, tuple[float, float]]:
    """Image end points {"x", "y", "z"} of the model axes of ``pose`` = (yaw, pitch, roll) in degrees.

    Each axis of ``length`` pixels starts at ``center`` (x, y in image pixels) and is projected
    orthographically: camera-frame (X, Y, Z) = R @ v goes to (cx + length * X, cy - length * Y).
    """
    yaw, pitch, roll = (float(a) for a in np.asarray(pose, dtype=np.float64).reshape(3))
    rot = rotation_matrix(yaw, pitch, roll)
    cx, cy = float(center[0]), float(center[1])
    ends = {}
    for name, axis in _UNIT_AXES.items():
        cam = rot @ np.asarray(axis)
        ends[name] = (cx + length * float(cam[0]), cy - length * float(cam[1]))
    return ends


def _fixed(point: Sequence[float]) -> tuple[int, int]:
    """Sub-pixel fixed-point coordinates for OpenCV's ``shift`` argument."""
    return round(float(point[0]) * _SCALE), round(float(point[1]) * _SCALE)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """A BGR copy of ``image`` (grey and BGRA inputs are converted)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image.copy()
    raise ValueError(f"expected a grey, BGR or BGRA image, got shape {image.shape}")


def _valid_points(landmarks: np.ndarray | None) -> np.ndarray | None:
    """Landmarks as (N, 2) floats, or None when absent or without any finite point."""
    if landmarks is None:
        return None
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    return pts if np.isfinite(pts).all(axis=1).any() else None


def _box_xyxy(box: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    """The first four numbers of ``box`` as (x1, y1, x2, y2) floats, or None."""
    if box is None:
        return None
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.size < 4 or not np.isfinite(values[:4]).all():
        return None
    return values[:4]


def _face_size(points: np.ndarray | None, box: np.ndarray | None) -> float:
    """Face size in pixels: sqrt(w * h) of the box, else of the points' tight box (at least 1)."""
    if box is not None:
        w, h = box[2] - box[0], box[3] - box[1]
    elif points is not None:
        finite = points[np.isfinite(points).all(axis=1)]
        w, h = np.ptp(finite[:, 0]), np.ptp(finite[:, 1])
    else:
        return 1.0
    return float(max(np.sqrt(max(w, 0.0) * max(h, 0.0)), 1.0))


def _face_center(points: np.ndarray | None, box: np.ndarray | None) -> tuple[float, float] | None:
    """Origin of the pose axes: the nose tip, else the mean of the points, else the box centre."""
    if points is not None:
        markup = MARKUPS.get(len(points))  # a 68- or 98-point face: its markup's nose tip
        nose = markup.nose_tip if markup is not None else None
        if nose is not None and np.isfinite(points[nose]).all():
            return float(points[nose, 0]), float(points[nose, 1])
        finite = points[np.isfinite(points).all(axis=1)]
        return float(finite[:, 0].mean()), float(finite[:, 1].mean())
    if box is not None:
        return float((box[0] + box[2]) / 2), float((box[1] + box[3]) / 2)
    return None


def _draw_points(canvas: np.ndarray, points: np.ndarray, size: float, color: Color) -> None:
    radius = max(1.0, size / 120.0)
    for point in points:
        if np.isfinite(point).all():
            cv2.circle(canvas, _fixed(point), round(float(radius * _SCALE)), color, -1, cv2.LINE_AA, _SHIFT)


def _draw_box(canvas: np.ndarray, box: np.ndarray, thickness: int) -> None:
    cv2.rectangle(canvas, _fixed(box[:2]), _fixed(box[2:]), _BOX_COLOR, thickness, cv2.LINE_AA, _SHIFT)


def _draw_score(canvas: np.ndarray, score: float, anchor: tuple[float, float], size: float) -> None:
    scale = float(np.clip(size / 250.0, 0.4, 1.5))
    org = (round(float(anchor[0])), max(round(float(anchor[1])) - 4, 12))
    cv2.putText(canvas, f"{score:.2f}", org, cv2.FONT_HERSHEY_SIMPLEX, scale, _BOX_COLOR, 1, cv2.LINE_AA)


def _draw_axes(canvas: np.ndarray, pose: np.ndarray, center: tuple[float, float], size: float) -> None:
    thickness = max(2, round(float(size / 80.0)))
    ends = pose_axes_2d(pose, center, 0.5 * size)
    for name in ("z", "y", "x"):
        cv2.line(
            canvas, _fixed(center), _fixed(ends[name]), AXIS_COLORS[name], thickness, cv2.LINE_AA, _SHIFT
        )


def _draw_face_on(
    canvas: np.ndarray,
    landmarks: np.ndarray | None,
    box: Sequence[float] | np.ndarray | None,
    pose: Sequence[float] | np.ndarray | None,
    score: float | None,
    color: Color,
) -> None:
    """Draw one face onto ``canvas`` in place."""
    points, xyxy = _valid_points(landmarks), _box_xyxy(box)
    size = _face_size(points, xyxy)
    if xyxy is not None:
        _draw_box(canvas, xyxy, max(1, round(float(size / 150.0))))
        if score is not None and np.isfinite(score):
            _draw_score(canvas, float(score), (xyxy[0], xyxy[1]), size)
    if points is not None:
        _draw_points(canvas, points, size, color)
    center = _face_center(points, xyxy)
    if pose is not None and center is not None and np.isfinite(np.asarray(pose, dtype=np.float64)).all():
        _draw_axes(canvas, np.asarray(pose, dtype=np.float64), center, size)


def draw_face(
    image_bgr: np.ndarray,
    landmarks: np.ndarray | None,
    box: Sequence[float] | np.ndarray | None = None,
    pose: Sequence[float] | np.ndarray | None = None,
    score: float | None = None,
    color: Color = DEFAULT_POINT_COLOR,
) -> np.ndarray:
    """A BGR copy of ``image_bgr`` with one face drawn; the input is left unchanged.

    ``landmarks`` (N, 2) pixels are drawn as anti-aliased dots sized by the face; ``box`` is
    (x1, y1, x2, y2) (extra entries ignored), ``score`` is written above it; ``pose`` (yaw, pitch,
    roll) in degrees draws the model axes (x red, y green, z blue) from the nose tip (or the mean of
    the points, or the box centre), half the face size long. Missing or non-finite parts are skipped.
    """
    canvas = _as_bgr(np.asarray(image_bgr))
    _draw_face_on(canvas, landmarks, box, pose, score, color)
    return canvas


def draw_faces(
    image_bgr: np.ndarray, faces: Iterable[object], color: Color = DEFAULT_POINT_COLOR, pixel_origin: float = 0.0
) -> np.ndarray:
    """A BGR copy of ``image_bgr`` with every face drawn.

    Faces are duck-typed: any object with attributes ``box``, ``landmarks``, ``pose`` and ``score``
    (a missing attribute counts as None). ``pixel_origin``: the convention of their coordinates
    (``FaceAligner.pixel_origin``; 1 for iBUG-convention points), shifted to OpenCV's to draw.
    """
    canvas = _as_bgr(np.asarray(image_bgr))

    def opencv(value: object) -> object:
        if value is None or not pixel_origin:
            return value
        return np.asarray(value, dtype=np.float64) - pixel_origin

    for face in faces:
        _draw_face_on(
            canvas,
            opencv(getattr(face, "landmarks", None)),
            opencv(getattr(face, "box", None)),
            getattr(face, "pose", None),
            getattr(face, "score", None),
            color,
        )
    return canvas


def write_image(path: str | Path, image_bgr: np.ndarray, jpeg_quality: int = 92) -> None:
    """Encode a BGR image by the file's suffix and write it atomically (folders are created);
    :class:`DataError` when OpenCV cannot encode it, ``OSError`` when it cannot be written."""
    path = Path(path)
    suffix = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, image_bgr, params)
    if not ok:
        raise DataError(path, "OpenCV could not encode the image")
    write_atomic(path, lambda tmp: tmp.write_bytes(buf.tobytes()))
