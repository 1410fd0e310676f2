"""Face detectors, the choice among them, and the calibration of their boxes.

Detectors (all take a BGR uint8 image and return :class:`Detection` objects, best first; all may
be called from several threads at once):

* ``mtcnn``: MTCNN's three-stage cascade with the ``mtcnn`` package's weights, in ONNX Runtime
  (:mod:`.mtcnn_detector`);
* ``dlib-hog``: dlib's frontal HOG + linear SVM detector (:mod:`.dlib_detectors`);
* ``dlib-cnn``: dlib's MMOD CNN with ``mmod_human_face_detector.dat`` from the optional
  ``face_recognition_models`` package; more robust to pose, slow on a CPU;
* ``haar``: OpenCV's Viola-Jones cascade, where the installed OpenCV still ships one (OpenCV 5
  wheels do not) (:mod:`.opencv_detectors`);
* ``yunet``: OpenCV's ``FaceDetectorYN`` with a YuNet ONNX file the user supplies;
* :class:`BoxesDetector`: boxes given by the user (:mod:`.user_boxes`).

Nothing is downloaded: a detector whose files are missing raises :class:`ModelError` saying what
to install. :func:`available_detectors` reports which ones work here; :func:`make_detector`
builds one by name, ``"auto"`` picking the best installed one (order: :data:`AUTO_ORDER`).
Box calibration (detector box -> the landmark model's reference box) is in :mod:`.calibration`.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import cv2

from ..errors import ModelError
from .base import MIN_IOU, Detection, FaceDetector, PerThread, box_iou, check_image, match_detection
from .calibration import (
    CALIBRATION_FILE,
    BoxCalibration,
    CalibrationEntry,
    Calibrations,
    fit_calibration,
    load_calibrations,
    to_reference_box,
)
from .dlib_detectors import DLIB_CNN_MODEL, DlibCnnDetector, DlibHogDetector, dlib_cnn_model_path
from .mtcnn_detector import MtcnnDetector, mtcnn_problem
from .opencv_detectors import HaarDetector, YuNetDetector, haar_cascade_path, haar_problem
from .presets import PRESETS, preset_options
from .user_boxes import BoxesDetector

__all__ = [
    "AUTO_ORDER", "CALIBRATION_FILE", "DETECTORS", "MIN_IOU", "BoxCalibration", "BoxesDetector",
    "PRESETS", "CalibrationEntry", "Calibrations", "Detection", "DetectorOptionError", "DlibCnnDetector",
    "DlibHogDetector", "FaceDetector", "HaarDetector", "MtcnnDetector", "PerThread", "UnknownDetectorError",
    "YuNetDetector", "available_detectors", "box_iou", "check_image", "dlib_cnn_model_path",
    "fit_calibration", "haar_cascade_path", "load_calibrations", "make_detector", "match_detection",
    "to_reference_box",
]

DETECTORS: dict[str, type[FaceDetector]] = {
    "mtcnn": MtcnnDetector,
    "dlib-hog": DlibHogDetector,
    "dlib-cnn": DlibCnnDetector,
    "haar": HaarDetector,
    "yunet": YuNetDetector,
}

# "auto" takes the first detector of this list that works here (YuNet only when given a model
# file). Measured on every face crop of lfpw_train + udacity_train (4,035 faces; the validation
# split is 471 of them) by scripts/calibrate_detectors.py and benchmarks/detector_choice.py; CPU
# ms of one thread (time.thread_time) on the shared 2-core machine (see benchmarks/README.md):
#
#   detector (its defaults)                   missed lfpw / udacity / val   CPU ms 640x480 / 1280x720
#   mtcnn (48 px, P-Net 0.9, step 0.55, retry)  0.5 / 0.03 / 0.0 %           6.3 / 12.3 (idle)
#   dlib-hog (upsample 1, 0.2)                  7.5 / 5.6 / 4.2 %             109 / 322 (loaded)
#   dlib-hog (upsample 1, -0.4)                 3.2 / 0.7 / 0.2 %             (same)
#
# Both find no false face in skimage's coffee, chelsea and rocket and exactly one in the astronaut
# at these defaults (HOG at -0.4 finds 1 in rocket and 3 in the astronaut). MTCNN also finds
# 97.2 / 86.4 % of the validation faces rotated by 30 / 45 degrees (HOG: 97.7 / 66.9 %) and all
# but 2 of 360 faces of 40 to 200 px in 1280x720 collages, at a twentieth of HOG's cost: it comes first.
# dlib-hog stays for environments without the mtcnn package; dlib-cnn is slow on a CPU; Haar is
# last (frontal faces only, no real confidence score).
AUTO_ORDER: tuple[str, ...] = ("yunet", "mtcnn", "dlib-hog", "dlib-cnn", "haar")


class UnknownDetectorError(ModelError, ValueError):
    """A detector name that is not one of :data:`DETECTORS` (nor ``"auto"``)."""


class DetectorOptionError(ModelError, ValueError):
    """An option the chosen detector does not take (e.g. ``upsample`` for mtcnn)."""


def _detector_problem(name: str, **kwargs: Any) -> str | None:
    """Why detector ``name`` cannot be built here with ``kwargs`` (None: it can)."""
    if name in ("dlib-hog", "dlib-cnn") and importlib.util.find_spec("dlib") is None:
        return "dlib is not installed (pip install dlib-bin)"
    if name == "dlib-cnn" and kwargs.get("model_path") is None and dlib_cnn_model_path() is None:
        return f"needs {DLIB_CNN_MODEL} (pip install face_recognition_models, or pass model_path)"
    if name == "mtcnn":
        return mtcnn_problem()
    if name == "haar":
        return haar_problem(kwargs.get("cascade_path"))
    if name == "yunet":
        if not hasattr(cv2, "FaceDetectorYN"):
            return f"this OpenCV ({cv2.__version__}) has no FaceDetectorYN"
        path = kwargs.get("model_path")
        if path is None:
            return "needs model_path: a YuNet ONNX file (e.g. face_detection_yunet_2023mar.onnx)"
        if not Path(path).is_file():
            return f"{path}: no such file"
    return None


def available_detectors(**kwargs: Any) -> dict[str, str]:
    """Each detector name -> ``"ok"`` when it can be built here, else the reason it cannot.

    ``kwargs`` (e.g. ``model_path`` for YuNet) are taken into account where they apply.
    """
    return {name: _detector_problem(name, **kwargs) or "ok" for name in DETECTORS}


def _accepted(name: str) -> set[str]:
    return set(inspect.signature(DETECTORS[name].__init__).parameters) - {"self"}


def _construct(name: str, kwargs: dict[str, Any]) -> FaceDetector:
    """``DETECTORS[name](**kwargs)``, with a clear error for keywords it does not take."""
    accepted = _accepted(name)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise DetectorOptionError(
            None, f"detector {name!r} takes no option {', '.join(unknown)} (it takes: {', '.join(sorted(accepted))})")
    return DETECTORS[name](**kwargs)


def make_detector(name: str = "auto", preset: str | None = None, **kwargs: Any) -> FaceDetector:
    """A detector by name: one of :data:`DETECTORS` or ``"auto"``.

    ``kwargs`` go to the detector's constructor (``yunet`` needs ``model_path``), over the options
    ``preset`` (a name of :data:`PRESETS`, e.g. ``"recall"``) gives that detector. ``"auto"`` builds
    the first detector of :data:`AUTO_ORDER` that works here with these options (YuNet only when
    ``model_path`` is given). Raises UnknownDetectorError for an unknown name, ValueError for an
    option the detector does not take or an unknown preset (DetectorOptionError, also a
    ModelError), ModelError when it (for ``"auto"``: none) cannot be built.
    """
    if preset is not None and preset not in PRESETS:
        raise DetectorOptionError(None, f"unknown detector preset {preset!r} (choose from: {', '.join(PRESETS)})")
    key = name.strip().lower() if isinstance(name, str) else name
    if key == "auto":
        if "model_path" in kwargs:  # a model file given to "auto" is a YuNet model
            return _construct("yunet", preset_options(preset, "yunet", kwargs))
        reasons = []
        for candidate in (c for c in AUTO_ORDER if c != "yunet"):
            options = preset_options(preset, candidate, kwargs)
            unknown = set(options) - _accepted(candidate)
            problem = f"does not take {', '.join(sorted(unknown))}" if unknown else _detector_problem(candidate, **options)
            if problem is None:
                return _construct(candidate, options)
            reasons.append(f"{candidate}: {problem}")
        reasons.append("yunet: needs model_path (a YuNet ONNX file)")
        raise ModelError(None, "no face detector is usable here (" + "; ".join(reasons) + ")")
    if key not in DETECTORS:
        names = ", ".join(["auto", *DETECTORS])
        raise UnknownDetectorError(None, f"unknown face detector {name!r} (choose from: {names})")
    if key == "yunet" and "model_path" not in kwargs:
        raise ModelError(None, "the yunet detector needs model_path: a YuNet ONNX file (e.g. face_detection_yunet_2023mar.onnx)")
    return _construct(key, preset_options(preset, key, kwargs))
