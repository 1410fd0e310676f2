"""Box calibration: how a detector's box maps to the landmark model's reference box.

The landmark model crops a square of side ``crop_scale`` x the larger side of the *tight box of
the 68 ground-truth points*, centred on that box (see :mod:`asmnet.geometry`). A detector's box is
a different box: dlib's HOG box is smaller than the tight box and sits lower, MTCNN's and YuNet's
include the forehead, and so on. A :class:`BoxCalibration`, fitted once per detector on training
faces (``scripts/calibrate_detectors.py``), maps a detector box to a tight-box equivalent::

    reference centre = detector centre + (dx, dy) * detector size
    reference size   = scale * detector size          (size = the larger side of a box)

:func:`to_reference_box` applies it; the result goes to :func:`asmnet.geometry.face_crop_matrix`.
A model carries its calibrations as :class:`Calibrations` (``ModelInfo.calibrations``), parsed
once when the model loads; :meth:`Calibrations.for_detector` is the one lookup.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, ModelError
from ..fileio import read_small_json
from ..geometry import box_center_size, tight_box
from .base import MIN_IOU, Detection, FaceDetector, box_iou
from .user_boxes import BoxesDetector

# Calibrations fitted on the shipped training data (see scripts/calibrate_detectors.py).
CALIBRATION_FILE = Path(__file__).resolve().parent.parent / "models" / "detector_calibration.json"

_CALIBRATION_FIELDS: dict[str, type] = {
    "dx": float, "dy": float, "scale": float, "n": int, "miss_rate": float, "aspect": float,
}


@dataclass(frozen=True)
class BoxCalibration:
    """How a detector's box relates to the landmark model's reference box (the 68 points' tight box).

    reference centre = detector centre + (``dx``, ``dy``) x detector size; reference size (larger
    side) = ``scale`` x detector size, where a box's size is its larger side. ``aspect`` is the
    median height / width of the reference boxes, so :func:`to_reference_box` returns a box of the
    usual shape. ``n`` pairs were used to fit; ``miss_rate`` is the share of training faces the
    detector missed (no detection with IoU >= 0.3). Raises ModelError for non-finite or
    out-of-range values.
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
            object.__setattr__(self, name, value)
        object.__setattr__(self, "n", int(self.n))
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
    matches). Raises DataError when no pair is left, ValueError when the lengths differ.
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


def _plain_json(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as they read back from JSON (tuples -> lists, paths -> strings), for comparing."""
    return json.loads(json.dumps(dict(options), default=str))


@dataclass(frozen=True)
class CalibrationEntry:
    """One named calibration: fitted for ``detector`` (a detector name) with ``options`` (None: any)."""

    detector: str
    calibration: BoxCalibration
    options: dict[str, Any] | None = None


class Calibrations(Mapping[str, BoxCalibration]):
    """A model's box calibrations: entry name -> :class:`BoxCalibration`, parsed once.

    The JSON form (``model.json``'s ``calibrations``, ``detector_calibration.json``) maps each entry
    name to either a plain calibration object (the entry is the calibration of the detector of that
    name, whatever its options) or ``{"detector": NAME, "options": {...}, "calibration": {...}}``.
    Keys starting with ``_`` are notes and are skipped.
    """

    def __init__(self, entries: Mapping[str, CalibrationEntry] | None = None):
        self.entries: dict[str, CalibrationEntry] = dict(entries or {})

    @classmethod
    def from_json(cls, data: Any, source: str | Path | None = None) -> Calibrations:
        """Parse the JSON form; ModelError naming ``source`` and the entry for anything malformed."""
        if data is None:
            return cls()
        if isinstance(data, Calibrations):
            return data
        if not isinstance(data, Mapping):
            raise ModelError(source, f"calibrations must be a JSON object {{detector: {{...}}}}, got {type(data).__name__}")
        entries = {}
        for name, value in data.items():
            name = str(name)
            if name.startswith("_"):
                continue
            where = f"{os.fspath(source)} [{name}]" if source is not None else f"[{name}]"
            if isinstance(value, BoxCalibration):
                entries[name] = CalibrationEntry(name, value)
                continue
            if not isinstance(value, Mapping):
                raise ModelError(where, f"a calibration must be a JSON object, got {type(value).__name__}")
            if "calibration" in value:
                detector = value.get("detector", name)
                options = value.get("options")
                if not isinstance(detector, str) or (options is not None and not isinstance(options, Mapping)):
                    raise ModelError(where, "'detector' must be a name and 'options' an object")
                calibration = BoxCalibration.from_dict(value["calibration"], source=where)
                entries[name] = CalibrationEntry(detector, calibration, None if options is None else dict(options))
            elif "dx" in value or "scale" in value:
                entries[name] = CalibrationEntry(name, BoxCalibration.from_dict(value, source=where))
            else:
                raise ModelError(where, "entry has no 'calibration' object")
        return cls(entries)

    def to_json(self) -> dict[str, Any]:
        """The JSON form that :meth:`from_json` reads (plain objects where the entry has no options)."""
        out: dict[str, Any] = {}
        for name, entry in self.entries.items():
            if entry.options is None and entry.detector == name:
                out[name] = entry.calibration.to_dict()
            else:
                out[name] = {"detector": entry.detector, "options": entry.options,
                             "calibration": entry.calibration.to_dict()}
        return out

    def for_detector(self, detector: FaceDetector, model_name: str | None = None) -> BoxCalibration:
        """The calibration for ``detector``: an entry fitted with the same detector and the same
        values of its ``box_options`` (e.g. dlib's upsampling, which changes the boxes by a few
        percent), else the entry of the detector's name, else any entry of that detector. A
        :class:`BoxesDetector` gets the identity (its boxes are reference boxes). Raises ModelError
        when there is none (naming ``model_name`` when given).
        """
        if isinstance(detector, BoxesDetector):
            return BoxCalibration.identity()
        options = _plain_json(detector.options())
        wanted = {k: options.get(k) for k in detector.box_options}
        for entry in self.entries.values():
            if entry.detector == detector.name and entry.options is not None and wanted:
                recorded = _plain_json(entry.options)
                if all(recorded.get(k) == v for k, v in wanted.items()):
                    return entry.calibration
        named = self.entries.get(detector.name)
        if named is not None and named.detector == detector.name:
            return named.calibration
        for entry in self.entries.values():  # fitted with other options: still the right kind of box
            if entry.detector == detector.name:
                return entry.calibration
        owner = f"model {model_name!r}" if model_name else "these calibrations"
        raise ModelError(None, f"{owner} has no box calibration for detector {detector.name!r} "
                         "(run scripts/calibrate_detectors.py, or pass boxes= in the model's convention)")

    def __getitem__(self, name: str) -> BoxCalibration:
        return self.entries[name].calibration

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Calibrations):
            return self.entries == other.entries
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable mapping semantics: not hashable

    def __repr__(self) -> str:
        return f"Calibrations({', '.join(self.entries)})"


def load_calibrations(path: str | Path | None = None) -> Calibrations:
    """The calibrations of a file written by scripts/calibrate_detectors.py.

    ``path`` defaults to the calibration shipped with the package (:data:`CALIBRATION_FILE`).
    Raises ModelError when the file is missing or malformed.
    """
    file = Path(path) if path is not None else CALIBRATION_FILE
    if not file.exists():
        raise ModelError(file, "no such file (expected a detector calibration JSON)")
    data = read_small_json(file, "detector calibration JSON", error=ModelError)
    return Calibrations.from_json(data, source=file)
