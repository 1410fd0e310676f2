"""dlib's face detectors: the frontal HOG detector (built into dlib) and the MMOD CNN.

dlib's detector objects are not safe to share between threads (they keep scratch buffers; 8
threads on one object corrupt the heap), so each thread gets its own (:class:`PerThread`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Detection, FaceDetector, PerThread, by_score, check_image

DLIB_CNN_MODEL = "mmod_human_face_detector.dat"


def import_dlib(what: str) -> Any:
    """The dlib module, or ModelError saying how to get it."""
    try:
        import dlib
    except ImportError as exc:
        raise ModelError(None, f"{what} needs dlib, which is not installed (pip install dlib-bin): {exc}") from exc
    return dlib


def _dlib_box(rect: Any) -> np.ndarray:
    """A dlib rectangle (inclusive pixel indices) as an (x1, y1, x2, y2) box on pixel edges."""
    return np.array([rect.left() - 0.5, rect.top() - 0.5, rect.right() + 0.5, rect.bottom() + 0.5])


def _check_upsample(upsample: Any) -> int:
    if isinstance(upsample, bool) or int(upsample) != upsample or not 0 <= upsample <= 4:
        raise ValueError(f"upsample must be a whole number from 0 to 4, got {upsample!r}")
    return int(upsample)


class DlibHogDetector(FaceDetector):
    """dlib's frontal face detector (HOG features, linear SVM, 5 pose components).

    ``upsample`` doubles the image that many times first: the detector's smallest face is about
    80 px at 0, 40 px at 1. ``threshold`` is added to the SVM's decision threshold (negative: more
    faces, more false alarms); the score is the SVM margin.

    Default threshold 0.2: the lowest that keeps only real faces in the pictures below
    (``benchmarks/detector_choice.py``, upsample 1; misses over all 4,035 face crops of lfpw_train /
    udacity_train and over the validation split; false faces in skimage's coffee, chelsea, rocket
    and astronaut, which has one face):

    =========  ======================  =============  ================================
    threshold  missed lfpw / udacity   missed (val)   faces: coffee/chelsea/rocket/astro
    =========  ======================  =============  ================================
    -0.6       2.5 / 0.3 %             0.2 %          0 / 1 / 4 / 3
    -0.4       3.2 / 0.7 %             0.2 %          0 / 0 / 1 / 3
    -0.2       4.0 / 1.6 %             1.1 %          0 / 0 / 0 / 3
     0.0       6.0 / 3.5 %             2.8 %          0 / 0 / 0 / 2
     0.2       7.5 / 5.6 %             4.2 %          0 / 0 / 0 / 1
    =========  ======================  =============  ================================

    Pass ``threshold=-0.4`` to find more faces when the pictures surely hold some (it then also
    fires on two patches of the astronaut's suit); the default detector (MTCNN) does both.
    """

    name = "dlib-hog"
    box_options = ("upsample",)

    def __init__(self, upsample: int = 1, threshold: float = 0.2):
        self.upsample = _check_upsample(upsample)
        dlib = import_dlib("the dlib-hog detector")
        self.threshold = float(threshold)
        self._detector = PerThread(dlib.get_frontal_face_detector, dlib.get_frontal_face_detector())

    def options(self) -> dict[str, Any]:
        return {"upsample": self.upsample, "threshold": self.threshold}

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        rgb = np.ascontiguousarray(check_image(image_bgr)[:, :, ::-1])
        rects, scores, _ = self._detector.get().run(rgb, self.upsample, self.threshold)
        return by_score([Detection(_dlib_box(r), s) for r, s in zip(rects, scores)])


def dlib_cnn_model_path() -> Path | None:
    """``mmod_human_face_detector.dat`` of the installed face_recognition_models, else None.

    The package is located without importing it (its ``__init__`` needs pkg_resources).
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "models" / DLIB_CNN_MODEL
    return path if path.is_file() else None


class DlibCnnDetector(FaceDetector):
    """dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``).

    Finds faces down to about 80 px at ``upsample=0`` (40 px at 1, four times slower). Much more
    robust to pose and lighting than HOG, but slow without a GPU (seconds per photo on a CPU).
    ``model_path`` defaults to the file of the ``face_recognition_models`` package.
    """

    name = "dlib-cnn"
    box_options = ("upsample",)

    def __init__(self, upsample: int = 0, model_path: str | Path | None = None):
        self.upsample = _check_upsample(upsample)
        dlib = import_dlib("the dlib-cnn detector")
        path = Path(model_path) if model_path is not None else dlib_cnn_model_path()
        if path is None:
            raise ModelError(
                None,
                f"the dlib-cnn detector needs {DLIB_CNN_MODEL}: install face_recognition_models "
                "(pip install face_recognition_models) or pass model_path",
            )
        if not path.is_file():
            raise ModelError(path, "no such file (the dlib-cnn detector needs mmod_human_face_detector.dat)")

        def load() -> Any:
            return dlib.cnn_face_detection_model_v1(str(path))

        try:
            first = load()
        except RuntimeError as exc:
            raise ModelError(path, f"dlib cannot load this CNN face detector: {exc}".splitlines()[0]) from exc
        self._detector = PerThread(load, first)
        self.model_path = path

    def options(self) -> dict[str, Any]:
        return {"upsample": self.upsample}

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        rgb = np.ascontiguousarray(check_image(image_bgr)[:, :, ::-1])
        found = self._detector.get()(rgb, self.upsample)
        return by_score([Detection(_dlib_box(d.rect), d.confidence) for d in found])
