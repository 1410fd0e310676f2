"""Boxes the user gives instead of a detector."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .base import Detection, FaceDetector


class BoxesDetector(FaceDetector):
    """Returns the boxes it was given (x1, y1, x2, y2 each), score 1.0, whatever the image.

    Its boxes are taken as the model's reference boxes (identity calibration).
    """

    name = "boxes"

    def __init__(self, boxes: Iterable[Sequence[float]] | np.ndarray):
        array = np.asarray(list(boxes) if not isinstance(boxes, np.ndarray) else boxes, dtype=np.float64)
        if array.size == 0:
            array = array.reshape(0, 4)
        if array.ndim == 1 and array.shape == (4,):
            array = array[None]
        if array.ndim != 2 or array.shape[1] != 4:
            raise ValueError(f"boxes must be (N, 4) x1, y1, x2, y2, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError("boxes must be finite numbers")
        bad = np.flatnonzero((array[:, 2] <= array[:, 0]) | (array[:, 3] <= array[:, 1]))
        if bad.size:
            raise ValueError(f"box {int(bad[0])} {array[bad[0]].tolist()} has no area (needs x2 > x1 and y2 > y1)")
        self.boxes = array

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        return [Detection(box.copy(), 1.0) for box in self.boxes]
