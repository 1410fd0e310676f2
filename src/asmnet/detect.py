"""Face detectors and the calibration that turns their boxes into the landmark model's box.

The landmark model crops a square of side ``CROP_SCALE`` x the larger side of the *tight box of
the 68 ground-truth points*, centred on that box (see :mod:`asmnet.geometry`). A detector's box is
a different box: dlib's HOG box is smaller than the tight box and sits lower, YuNet's includes the
forehead, and so on. A :class:`BoxCalibration`, fitted once per detector on training faces
(``scripts/calibrate_detectors.py``), maps a detector box to a tight-box equivalent::

    reference centre = detector centre + (dx, dy) * detector size
    reference size   = scale * detector size          (size = the larger side of a box)

:func:`to_reference_box` applies it; the result goes to :func:`asmnet.geometry.face_crop_matrix`.

Detectors (all take a BGR uint8 image and return :class:`Detection` objects, best first):

* ``dlib-hog``: dlib's frontal HOG + linear SVM detector (dlib is optional);
* ``dlib-cnn``: dlib's MMOD CNN with ``mmod_human_face_detector.dat`` from the optional
  ``face_recognition_models`` package; more robust to pose, slow on a CPU;
* ``haar``: OpenCV's Viola-Jones cascade, where the installed OpenCV still ships one (OpenCV 5
  wheels do not);
* ``yunet``: OpenCV's ``FaceDetectorYN`` with a YuNet ONNX file the user supplies;
* :class:`BoxesDetector`: boxes given by the user.

Nothing is downloaded: a detector whose files are missing raises :class:`ModelError` saying what
to install. :func:`available_detectors` reports which ones work here; :func:`make_detector`
builds one by name, ``"auto"`` picking the best installed one (order: :data:`AUTO_ORDER`).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from asmnet.errors import DataError, ModelError
from asmnet.geometry import box_center_size, tight_box

# A detection counts as the face when its IoU with the tight box of the ground-truth points
# reaches this (a raw dlib box covers about 60 % of the tight box, so its IoU is typically 0.5-0.7).
MIN_IOU = 0.3

# Calibrations fitted on the shipped training data (see scripts/calibrate_detectors.py).
CALIBRATION_FILE = Path(__file__).resolve().parent / "models" / "detector_calibration.json"

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
DLIB_CNN_MODEL = "mmod_human_face_detector.dat"


# --------------------------------------------------------------------------------------------
# Detections and detectors
# --------------------------------------------------------------------------------------------


@dataclass
class Detection:
    """One detected face: ``box`` (x1, y1, x2, y2) float64 in image pixels, and its ``score``.

    Scores are each detector's own (dlib HOG: SVM margin; dlib CNN / YuNet: confidence; Haar:
    number of merged neighbours; user boxes: 1.0); compare them only within one detector.
    """

    box: np.ndarray
    score: float

    def __post_init__(self) -> None:
        box = np.asarray(self.box, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.all(np.isfinite(box)):
            raise ValueError(f"Detection.box must be 4 finite numbers (x1, y1, x2, y2), got {self.box!r}")
        self.box = box
        self.score = float(self.score)


def _check_image(image: np.ndarray) -> np.ndarray:
    """The image as a contiguous uint8 BGR array (grey images are expanded); DataError otherwise."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = type(image).__name__ if not isinstance(image, np.ndarray) else f"array of {image.dtype}"
        raise DataError(None, f"a detector needs a uint8 image array, got {kind}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise DataError(None, f"a detector needs an H x W x 3 BGR image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _sorted(detections: list[Detection]) -> list[Detection]:
    """Detections by decreasing score."""
    return sorted(detections, key=lambda d: -d.score)


class FaceDetector(ABC):
    """A face detector: :meth:`detect` returns the faces of a BGR image, best score first."""

    name: str = "detector"

    @abstractmethod
    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in ``image_bgr`` (H x W x 3 uint8, BGR), by decreasing score."""

    def options(self) -> dict[str, Any]:
        """The settings that change the boxes (recorded beside a calibration)."""
        return {}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def _import_dlib(what: str) -> Any:
    """The dlib module, or ModelError saying how to get it."""
    try:
        import dlib
    except ImportError as exc:
        raise ModelError(None, f"{what} needs dlib, which is not installed (pip install dlib-bin): {exc}") from exc
    return dlib


def _dlib_box(rect: Any) -> np.ndarray:
    """A dlib rectangle (inclusive pixel indices) as an (x1, y1, x2, y2) box on pixel edges."""
    return np.array([rect.left() - 0.5, rect.top() - 0.5, rect.right() + 0.5, rect.bottom() + 0.5])


class DlibHogDetector(FaceDetector):
    """dlib's frontal face detector (HOG features, linear SVM, 5 pose components).

    ``upsample`` doubles the image that many times first: the detector's smallest face is about
    80 px at 0, 40 px at 1. ``threshold`` is added to the SVM's decision threshold (negative: more
    faces, more false alarms); the score is the SVM margin.

    Default threshold -0.4 (dlib's own default is 0), chosen on the training faces of lfpw_train /
    udacity_train at upsample 1 (miss rate; unmatched detections per image):

    =========  ===============  ===============
    threshold  lfpw_train       udacity_train
    =========  ===============  ===============
     0.0       6.4 %; 0.028     3.6 %; 0.002
    -0.2       4.4 %; 0.047     1.6 %; 0.005
    -0.4       3.6 %; 0.064     0.8 %; 0.011
    -0.6       2.7 %; 0.139     0.4 %; 0.032
    =========  ===============  ===============

    Below -0.4 the false alarms grow faster than the misses fall.
    """

    name = "dlib-hog"

    def __init__(self, upsample: int = 1, threshold: float = -0.4):
        if int(upsample) != upsample or not 0 <= upsample <= 4:
            raise ValueError(f"upsample must be a whole number from 0 to 4, got {upsample!r}")
        dlib = _import_dlib("the dlib-hog detector")
        self.upsample = int(upsample)
        self.threshold = float(threshold)
        self._detector = dlib.get_frontal_face_detector()

    def options(self) -> dict[str, Any]:
        return {"upsample": self.upsample, "threshold": self.threshold}

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        rgb = np.ascontiguousarray(_check_image(image_bgr)[:, :, ::-1])
        rects, scores, _ = self._detector.run(rgb, self.upsample, self.threshold)
        return _sorted([Detection(_dlib_box(r), s) for r, s in zip(rects, scores)])


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
    robust to pose and lighting than HOG, but slow without a GPU (see AUTO_ORDER for timings).
    ``model_path`` defaults to the file of the ``face_recognition_models`` package.
    """

    name = "dlib-cnn"

    def __init__(self, upsample: int = 0, model_path: str | Path | None = None):
        if int(upsample) != upsample or not 0 <= upsample <= 4:
            raise ValueError(f"upsample must be a whole number from 0 to 4, got {upsample!r}")
        dlib = _import_dlib("the dlib-cnn detector")
        path = Path(model_path) if model_path is not None else dlib_cnn_model_path()
        if path is None:
            raise ModelError(
                None,
                f"the dlib-cnn detector needs {DLIB_CNN_MODEL}: install face_recognition_models "
                "(pip install face_recognition_models) or pass model_path",
            )
        if not path.is_file():
            raise ModelError(path, "no such file (the dlib-cnn detector needs mmod_human_face_detector.dat)")
        try:
            self._detector = dlib.cnn_face_detection_model_v1(str(path))
        except RuntimeError as exc:
            raise ModelError(path, f"dlib cannot load this CNN face detector: {exc}".splitlines()[0]) from exc
        self.upsample = int(upsample)
        self.model_path = path

    def options(self) -> dict[str, Any]:
        return {"upsample": self.upsample}

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        rgb = np.ascontiguousarray(_check_image(image_bgr)[:, :, ::-1])
        found = self._detector(rgb, self.upsample)
        return _sorted([Detection(_dlib_box(d.rect), d.confidence) for d in found])


def haar_cascade_path() -> Path | None:
    """The frontal-face Haar cascade shipped with this OpenCV, or None (OpenCV 5 ships none)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        return None
    path = Path(folder) / HAAR_CASCADE
    return path if path.is_file() else None


def _haar_problem(cascade_path: str | Path | None) -> str | None:
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
        problem = _haar_problem(cascade_path)
        if problem is not None:
            raise ModelError(None, problem)
        path = Path(cascade_path) if cascade_path is not None else haar_cascade_path()
        assert path is not None
        if not path.is_file():
            raise ModelError(path, "no such file (expected an OpenCV Haar cascade .xml)")
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ModelError(path, "OpenCV cannot load this Haar cascade")
        self.cascade_path = path
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)

    def options(self) -> dict[str, Any]:
        return {"scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors, "min_size": self.min_size}

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        grey = cv2.cvtColor(_check_image(image_bgr), cv2.COLOR_BGR2GRAY)
        grey = cv2.equalizeHist(grey)
        rects, counts = self._cascade.detectMultiScale2(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        found = [
            Detection(np.array([x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5]), float(n))
            for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).reshape(-1))
        ]
        return _sorted(found)


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
        try:
            self._detector = cv2.FaceDetectorYN.create(
                str(path), "", (320, 320), float(score_threshold), float(nms_threshold), int(top_k)
            )
        except cv2.error as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise ModelError(path, f"OpenCV cannot load this as a YuNet model: {first}") from exc
        self.model_path = path
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self._size: tuple[int, int] | None = None

    def options(self) -> dict[str, Any]:
        return {"score_threshold": self.score_threshold, "nms_threshold": self.nms_threshold}

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        image = _check_image(image_bgr)
        size = (image.shape[1], image.shape[0])
        if size != self._size:
            self._detector.setInputSize(size)
            self._size = size
        _, faces = self._detector.detect(image)
        if faces is None:
            return []
        found = [
            Detection(np.array([x, y, x + w, y + h]) - 0.5, row[-1])
            for row in np.asarray(faces, dtype=np.float64)
            for x, y, w, h in [row[:4]]
        ]
        return _sorted(found)


class BoxesDetector(FaceDetector):
    """Returns the boxes it was given (x1, y1, x2, y2 each), score 1.0, whatever the image."""

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


# --------------------------------------------------------------------------------------------
# Choosing a detector
# --------------------------------------------------------------------------------------------

DETECTORS: dict[str, type[FaceDetector]] = {
    "dlib-hog": DlibHogDetector,
    "dlib-cnn": DlibCnnDetector,
    "haar": HaarDetector,
    "yunet": YuNetDetector,
}

# "auto" takes the first detector of this list that works here (YuNet only when given a model
# file). Measured with scripts/calibrate_detectors.py (models/detector_calibration.json) on the
# validation split of lfpw_train + udacity_train (471 faces: 100 + 371), on 2 CPU
# cores shared with a training job (so times are pessimistic); ms over all images run:
#
#   detector (options)          val miss lfpw / udacity   ms median / p90
#   dlib-hog (upsample 1, -0.4)      1.0 % / 0.0 %          11.5 / 36.8
#   dlib-hog (upsample 0, -0.4)      n/a   / 16.4 %          2.8 /  9.6   (udacity only)
#   dlib-hog (upsample 0, 0.0)       2.0 % / 23.5 %          3.1 / 11.4
#   dlib-cnn (upsample 0)            0.0 % / 31.3 %        146.8 / 602    (misses faces < ~80 px)
#   dlib-cnn (upsample 1)            n/a   / 0.0 % (40)    454   / 1488   (udacity only)
#   haar, yunet                      not measured: OpenCV 5 has no cascades; no YuNet file here
#
# dlib-hog at upsample 1 finds nearly every face here, ten times faster than the CNN, so it comes
# first. The CNN copes better with turned and badly lit faces (and its calibrated box is tighter:
# median centre error 0.07 vs 0.095 of the face size) but needs upsample 1 for small faces, which
# costs ~0.5 s per small image on a CPU. YuNet (a small CNN built for speed; not measured here)
# is first when the user supplies its ONNX file. Haar is last (not measurable here either):
# frontal faces only, and it gives no real confidence score.
AUTO_ORDER: tuple[str, ...] = ("yunet", "dlib-hog", "dlib-cnn", "haar")


class UnknownDetectorError(ModelError, ValueError):
    """A detector name that is not one of :data:`DETECTORS` (nor ``"auto"``)."""


def _detector_problem(name: str, **kwargs: Any) -> str | None:
    """Why detector ``name`` cannot be built here with ``kwargs`` (None: it can)."""
    if name in ("dlib-hog", "dlib-cnn") and importlib.util.find_spec("dlib") is None:
        return "dlib is not installed (pip install dlib-bin)"
    if name == "dlib-cnn" and kwargs.get("model_path") is None and dlib_cnn_model_path() is None:
        return f"needs {DLIB_CNN_MODEL} (pip install face_recognition_models, or pass model_path)"
    if name == "haar":
        return _haar_problem(kwargs.get("cascade_path"))
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


def _construct(name: str, kwargs: dict[str, Any]) -> FaceDetector:
    """``DETECTORS[name](**kwargs)``, with a clear error for keywords it does not take."""
    cls = DETECTORS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"detector {name!r} takes no option {', '.join(unknown)} (it takes: {', '.join(sorted(accepted))})")
    return cls(**kwargs)


def make_detector(name: str = "auto", **kwargs: Any) -> FaceDetector:
    """A detector by name: ``"dlib-hog"``, ``"dlib-cnn"``, ``"haar"``, ``"yunet"`` or ``"auto"``.

    ``kwargs`` go to the detector's constructor (``yunet`` needs ``model_path``). ``"auto"`` builds
    the first detector of :data:`AUTO_ORDER` that works here with these options (YuNet only when
    ``model_path`` is given); ModelError when none does, with each one's reason.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key == "auto":
        if "model_path" in kwargs:  # a model file given to "auto" is a YuNet model
            return _construct("yunet", dict(kwargs))
        reasons = []
        for candidate in (c for c in AUTO_ORDER if c != "yunet"):
            unknown = set(kwargs) - set(inspect.signature(DETECTORS[candidate].__init__).parameters)
            problem = f"does not take {', '.join(sorted(unknown))}" if unknown else _detector_problem(candidate, **kwargs)
            if problem is None:
                return _construct(candidate, dict(kwargs))
            reasons.append(f"{candidate}: {problem}")
        reasons.append("yunet: needs model_path (a YuNet ONNX file)")
        raise ModelError(None, "no face detector is usable here (" + "; ".join(reasons) + ")")
    if key not in DETECTORS:
        names = ", ".join(["auto", *DETECTORS])
        raise UnknownDetectorError(None, f"unknown face detector {name!r} (choose from: {names})")
    if key == "yunet" and "model_path" not in kwargs:
        raise ModelError(None, "the yunet detector needs model_path: a YuNet ONNX file (e.g. face_detection_yunet_2023mar.onnx)")
    return _construct(key, dict(kwargs))


# --------------------------------------------------------------------------------------------
# Box calibration
# --------------------------------------------------------------------------------------------


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


_CALIBRATION_FIELDS: dict[str, type] = {
    "dx": float, "dy": float, "scale": float, "n": int, "miss_rate": float, "aspect": float,
}


@dataclass
class BoxCalibration:
    """How a detector's box relates to the landmark model's reference box (the 68 points' tight box).

    reference centre = detector centre + (``dx``, ``dy``) x detector size; reference size (larger
    side) = ``scale`` x detector size, where a box's size is its larger side. ``aspect`` is the
    median height / width of the reference boxes, so :func:`to_reference_box` returns a box of the
    usual shape. ``n`` pairs were used to fit; ``miss_rate`` is the share of training faces the
    detector missed (no detection with IoU >= 0.3).
    """

    dx: float
    dy: float
    scale: float
    n: int
    miss_rate: float
    aspect: float = 1.0

    def __post_init__(self) -> None:
        for name in ("dx", "dy", "scale", "miss_rate", "aspect"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ModelError(None, f"box calibration: {name} must be finite, got {value}")
            setattr(self, name, value)
        self.n = int(self.n)
        if self.scale <= 0 or self.aspect <= 0:
            raise ModelError(None, f"box calibration: scale and aspect must be positive, got {self.scale}, {self.aspect}")
        if not 0.0 <= self.miss_rate <= 1.0 or self.n < 0:
            raise ModelError(None, f"box calibration: needs 0 <= miss_rate <= 1 and n >= 0, got {self.miss_rate}, {self.n}")

    @classmethod
    def identity(cls) -> BoxCalibration:
        """The calibration of boxes that already are reference boxes (e.g. user-given tight boxes)."""
        return cls(dx=0.0, dy=0.0, scale=1.0, n=0, miss_rate=0.0, aspect=1.0)

    def to_dict(self) -> dict[str, float | int]:
        """Plain JSON-able dict (see :meth:`from_dict`)."""
        return {name: getattr(self, name) for name in _CALIBRATION_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path | None = None) -> BoxCalibration:
        """From :meth:`to_dict`'s output; ModelError naming ``source`` for missing, unknown or bad values.

        ``aspect`` may be left out (1.0).
        """
        if not isinstance(data, Mapping):
            raise ModelError(source, f"box calibration must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - set(_CALIBRATION_FIELDS))
        if unknown:
            raise ModelError(source, f"box calibration has unknown keys: {', '.join(unknown)}")
        missing = [k for k in _CALIBRATION_FIELDS if k not in data and k != "aspect"]
        if missing:
            raise ModelError(source, f"box calibration lacks keys: {', '.join(missing)}")
        values: dict[str, Any] = {}
        for key, kind in _CALIBRATION_FIELDS.items():
            if key not in data:
                continue
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ModelError(source, f"box calibration: {key} must be a number, got {value!r}")
            if kind is int and (isinstance(value, float) and not value.is_integer()):
                raise ModelError(source, f"box calibration: {key} must be a whole number, got {value!r}")
            values[key] = kind(value)
        try:
            return cls(**values)
        except ModelError as exc:
            raise ModelError(source, exc.problem) from None


def fit_calibration(
    det_boxes: Sequence[np.ndarray | Detection | None],
    gt_points_list: Sequence[np.ndarray],
    min_iou: float = MIN_IOU,
) -> BoxCalibration:
    """Fit a :class:`BoxCalibration` from detector boxes and the ground-truth points of the same faces.

    ``det_boxes[i]`` is the detection matched to face i (a box, a Detection, or None for a miss).
    Pairs whose IoU with the tight box is below ``min_iou`` are not faces: they count as misses and
    are left out. Each parameter is the median over the remaining pairs (robust to a few wrong
    matches). DataError when no pair is left.
    """
    if len(det_boxes) != len(gt_points_list):
        raise ValueError(f"{len(det_boxes)} detector boxes for {len(gt_points_list)} faces")
    offsets, scales, aspects = [], [], []
    for det, points in zip(det_boxes, gt_points_list):
        if det is None:
            continue
        box = det.box if isinstance(det, Detection) else np.asarray(det, dtype=np.float64)
        reference = tight_box(points)
        if box_iou(box, reference) < min_iou:
            continue
        det_center, det_size = box_center_size(box)
        ref_center, ref_size = box_center_size(reference)
        offsets.append((ref_center - det_center) / det_size)
        scales.append(ref_size / det_size)
        width, height = reference[2] - reference[0], reference[3] - reference[1]
        aspects.append(height / width)
    if not scales:
        raise DataError(None, f"cannot calibrate: no detection overlaps its face (IoU >= {min_iou}) in {len(det_boxes)} faces")
    offset = np.median(np.asarray(offsets), axis=0)
    total = len(det_boxes)
    return BoxCalibration(
        dx=float(offset[0]), dy=float(offset[1]), scale=float(np.median(scales)), n=len(scales),
        miss_rate=(total - len(scales)) / total, aspect=float(np.median(aspects)),
    )


def to_reference_box(det_box: np.ndarray | Detection, calibration: BoxCalibration) -> np.ndarray:
    """The reference box (tight-box equivalent, x1, y1, x2, y2) that a detector box stands for.

    Its centre and larger side follow the calibration; its shape is the calibration's median
    aspect. Feed it to :func:`asmnet.geometry.face_crop_matrix`.
    """
    box = det_box.box if isinstance(det_box, Detection) else np.asarray(det_box, dtype=np.float64)
    center, size = box_center_size(box)
    center = center + np.array([calibration.dx, calibration.dy]) * size
    side = calibration.scale * size
    if calibration.aspect >= 1.0:
        half = np.array([side / calibration.aspect, side]) / 2.0
    else:
        half = np.array([side, side * calibration.aspect]) / 2.0
    return np.concatenate([center - half, center + half])


def load_calibrations(path: str | Path | None = None) -> dict[str, BoxCalibration]:
    """Detector name -> calibration, from a file written by scripts/calibrate_detectors.py.

    ``path`` defaults to the calibration shipped with the package (:data:`CALIBRATION_FILE`).
    ModelError when the file is missing or malformed.
    """
    file = Path(path) if path is not None else CALIBRATION_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(file, "no such file (expected a detector calibration JSON)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(file, f"cannot read detector calibrations: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(file, "detector calibrations must be a JSON object {detector: {...}}")
    result = {}
    for name, entry in data.items():
        if name.startswith("_"):
            continue  # comments / metadata
        if not isinstance(entry, dict) or "calibration" not in entry:
            raise ModelError(file, f"entry {name!r} has no 'calibration' object")
        result[name] = BoxCalibration.from_dict(entry["calibration"], source=f"{os.fspath(file)} [{name}]")
    return result


def calibration_for(detector: FaceDetector, path: str | Path | None = None) -> BoxCalibration:
    """The calibration of ``detector`` from a calibration file (default: the shipped one).

    Prefers an entry fitted with the same detector and options (e.g. the same upsampling, which
    changes the boxes by a few percent); else the entry named after the detector. A
    :class:`BoxesDetector` gets the identity (its boxes are taken as reference boxes). ModelError
    when the file has no entry for this detector.
    """
    if isinstance(detector, BoxesDetector):
        return BoxCalibration.identity()
    file = Path(path) if path is not None else CALIBRATION_FILE
    calibrations = load_calibrations(file)
    entries = json.loads(file.read_text(encoding="utf-8"))
    options = json.loads(json.dumps(detector.options()))
    for name, entry in entries.items():
        if name in calibrations and entry.get("detector") == detector.name and entry.get("options") == options:
            return calibrations[name]
    if detector.name in calibrations:
        return calibrations[detector.name]
    raise ModelError(file, f"no calibration for the {detector.name} detector (run scripts/calibrate_detectors.py)")
