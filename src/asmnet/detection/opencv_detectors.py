"""OpenCV's face detectors: the Viola-Jones Haar cascade and YuNet (``cv2.FaceDetectorYN``).

Both OpenCV objects keep per-call state (YuNet its input size), so each thread gets its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import ModelError
from .base import Detection, FaceDetector, PerThread, by_score, check_image

HAAR_CASCADE = "haarcascade_frontalface_default.xml"


def haar_cascade_path() -> Path | None:
    """The frontal-face Haar cascade shipped with this OpenCV, or None (OpenCV 5 ships none)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        return None
    path = Path(folder) / HAAR_CASCADE
    return path if path.is_file() else None


def haar_problem(cascade_path: str | Path | None) -> str | None:
    """Why the Haar detector cannot run here, or None."""
    if not hasattr(cv2, "CascadeClassifier") or (cascade_path is None and haar_cascade_path() is None):
        return (
            f"this OpenCV ({cv2.__version__}) ships no Haar cascade files; "
            "install opencv-python-headless<5 or use another detector"
        )
    return None


class HaarDetector(FaceDetector):
    """OpenCV's Viola-Jones frontal face cascade (fast, many misses on turned faces).

    Uses ``cv2.data.haarcascades`` + ``haarcascade_frontalface_default.xml`` unless
    ``cascade_path`` is given. OpenCV 5 wheels ship neither the files nor ``CascadeClassifier``:
    there this raises ModelError. The score is the number of merged neighbour windows.
    """

    name = "haar"

    def __init__(
        self,
        cascade_path: str | Path | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
    ):
        problem = haar_problem(cascade_path)
        if problem is not None:
            raise ModelError(None, problem)
        path = Path(cascade_path) if cascade_path is not None else haar_cascade_path()
        assert path is not None
        if not path.is_file():
            raise ModelError(path, "no such file (expected an OpenCV Haar cascade .xml)")
        first = cv2.CascadeClassifier(str(path))
        if first.empty():
            raise ModelError(path, "OpenCV cannot load this Haar cascade")
        self._cascade = PerThread(lambda: cv2.CascadeClassifier(str(path)), first)
        self.cascade_path = path
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)

    def options(self) -> dict[str, Any]:
        return {"scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors, "min_size": self.min_size}

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        grey = cv2.cvtColor(check_image(image_bgr), cv2.COLOR_BGR2GRAY)
        grey = cv2.equalizeHist(grey)
        rects, counts = self._cascade.get().detectMultiScale2(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        found = [
            Detection(np.array([x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5]), float(n))
            for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).reshape(-1))
        ]
        return by_score(found)


class _YuNetState:
    """One thread's ``cv2.FaceDetectorYN`` and the input size it was last set to."""

    def __init__(self, detector: Any):
        self.detector = detector
        self.size: tuple[int, int] | None = None


class YuNetDetector(FaceDetector):
    """OpenCV's YuNet CNN (``cv2.FaceDetectorYN``) with an ONNX file you supply.

    The file is OpenCV Zoo's ``face_detection_yunet_2023mar.onnx`` (or a compatible one); it is
    never downloaded. The score is YuNet's confidence; faces below ``score_threshold`` are dropped.
    """

    name = "yunet"

    def __init__(
        self,
        model_path: str | Path,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
    ):
        if not hasattr(cv2, "FaceDetectorYN"):
            raise ModelError(None, f"this OpenCV ({cv2.__version__}) has no FaceDetectorYN (YuNet needs >= 4.5.4)")
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(path, "no such file (the yunet detector needs a YuNet .onnx model)")
        self.model_path = path
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        try:
            first = self._load()
        except cv2.error as exc:
            first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise ModelError(path, f"OpenCV cannot load this as a YuNet model: {first_line}") from exc
        self._state = PerThread(self._load, first)

    def _load(self) -> _YuNetState:
        return _YuNetState(cv2.FaceDetectorYN.create(
            str(self.model_path), "", (320, 320), self.score_threshold, self.nms_threshold, self.top_k
        ))

    def options(self) -> dict[str, Any]:
        return {"score_threshold": self.score_threshold, "nms_threshold": self.nms_threshold}

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        image = check_image(image_bgr)
        state = self._state.get()
        size = (image.shape[1], image.shape[0])
        if size != state.size:
            state.detector.setInputSize(size)
            state.size = size
        _, faces = state.detector.detect(image)
        if faces is None:
            return []
        found = [
            Detection(np.array([x, y, x + w, y + h]) - 0.5, row[-1])
            for row in np.asarray(faces, dtype=np.float64)
            for x, y, w, h in [row[:4]]
        ]
        return by_score(found)
