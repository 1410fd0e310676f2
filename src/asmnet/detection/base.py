"""What every face detector shares: :class:`Detection`, the :class:`FaceDetector` base, image checks,
per-thread state for native detectors, and box overlap (IoU, matching a detection to a face)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import cv2
import numpy as np

from ..errors import DataError
from ..geometry import tight_box

# A detection counts as the face when its IoU with the tight box of the ground-truth points
# reaches this (a raw dlib box covers about 60 % of the tight box, so its IoU is typically 0.5-0.7).
MIN_IOU = 0.3

T = TypeVar("T")


@dataclass
class Detection:
    """One detected face: ``box`` (x1, y1, x2, y2) float64 in image pixels, and its ``score``.

    Scores are each detector's own (dlib HOG: SVM margin; dlib CNN / YuNet / MTCNN: confidence;
    Haar: number of merged neighbours; user boxes: 1.0); compare them only within one detector.
    """

    box: np.ndarray
    score: float

    def __post_init__(self) -> None:
        box = np.asarray(self.box, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.all(np.isfinite(box)):
            raise ValueError(f"Detection.box must be 4 finite numbers (x1, y1, x2, y2), got {self.box!r}")
        self.box = box
        self.score = float(self.score)


def check_image(image: np.ndarray) -> np.ndarray:
    """The image as a contiguous uint8 BGR array (grey images are expanded); DataError otherwise."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = type(image).__name__ if not isinstance(image, np.ndarray) else f"array of {image.dtype}"
        raise DataError(None, f"a detector needs a uint8 image array, got {kind}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise DataError(None, f"a detector needs an H x W x 3 BGR image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def by_score(detections: list[Detection]) -> list[Detection]:
    """Detections by decreasing score."""
    return sorted(detections, key=lambda d: -d.score)


class PerThread(Generic[T]):
    """One object per thread, made by ``factory`` on first use in that thread.

    dlib's and OpenCV's detector objects keep scratch buffers: two threads calling one object at
    once corrupt the heap (issue 14.1). Each thread gets its own object instead of a lock, so
    threads still detect in parallel. ``get()`` in the constructing thread returns ``first``.
    """

    def __init__(self, factory: Callable[[], T], first: T | None = None):
        self._factory = factory
        self._local = threading.local()
        if first is not None:
            self._local.value = first

    def get(self) -> T:
        value = getattr(self._local, "value", None)
        if value is None:
            value = self._local.value = self._factory()
        return value


class FaceDetector(ABC):
    """A face detector: :meth:`detect` returns the faces of a BGR image, best score first.

    Every detector of this package may be called from several threads at once.
    """

    name: str = "detector"
    # the options that change where the boxes lie (a calibration fitted with other values of these
    # fits less well); scores thresholds and the like only decide which boxes are returned
    box_options: tuple[str, ...] = ()

    @abstractmethod
    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in ``image_bgr`` (H x W x 3 uint8, BGR), by decreasing score.

        Raises DataError for an image that is not a uint8 H x W (x 3) array.
        """

    def options(self) -> dict[str, Any]:
        """The detector's settings (recorded beside a calibration; see ``box_options``)."""
        return {}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2); 0 when either has no area."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match_detection(
    detections: Sequence[Detection], gt_points: np.ndarray, min_iou: float = MIN_IOU
) -> Detection | None:
    """The detection that overlaps the tight box of ``gt_points`` most (IoU >= min_iou), else None."""
    reference = tight_box(gt_points)
    best, best_iou = None, min_iou
    for det in detections:
        iou = box_iou(det.box, reference)
        if iou >= best_iou:
            best, best_iou = det, iou
    return best
