"""The model package's description, ``model.json``: read, checked and written here, and only here.

A *model package* is a folder with ``model.json`` (what the network expects and returns, its shape
model, detector box calibrations, quality thresholds and model card), ``model.onnx`` and optionally
``weights.pt`` (:mod:`asmnet.runtime` loads them). :class:`ModelInfo` is the parsed description;
every tool that changes a package's model.json (``asmnet export``, the INT8 quantisation, the
build scripts and benchmarks/second_look.py) writes it through :func:`write_model_json` or
:func:`edit_model_json`, which refuse a document :func:`read_model_json` would not load.
Torch-free: the inference side and the checkpoint code (:mod:`asmnet.nn.checkpoint`) both use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .detection.calibration import Calibrations
from .errors import ModelError
from .fileio import read_small_json, write_json_atomic
from .markup import Markup, markup_for
from .quality import LEARNED_KINDS, QualityModel
from .shape_model import ShapeModel

MODEL_FORMAT = "asmnet-model"
MODEL_VERSION = 1
ERROR_OUTPUT = "error"  # the optional third graph output: the error head (asmnet.quality)
ERROR_OUTPUT_DESCRIPTION = "the error head's estimate of ln(NME %) of the landmarks (B, 1)"
# The shipped detector calibrations map a detector's box to the tight box of the 68 iBUG points
# as written in .pts files (first pixel's centre at 1). That box does not depend on the network,
# so they hold for any 68-point model trained on points in that convention: a checkpoint gets
# them as its export does (asmnet.packaging.export.package_calibrations).
SHIPPED_CALIBRATION_POINTS, SHIPPED_CALIBRATION_ORIGIN = 68, 1.0

# What a model file may hold (ModelInfo.check): every number finite and in these ranges, so that
# nothing is built from, or computed with, a value no real model has.
INPUT_SIZES = (32, 1024)  # pixels
CROP_SCALES = (0.5, 4.0)  # crop side / the reference box's larger side
ORIGINS = (-1.0, 2.0)  # the first pixel's centre (0: OpenCV, 1: iBUG .pts)
MAX_QUALITY_THRESHOLD = 1e4  # % of the inter-ocular distance
MODEL_WIDTHS = (0.0, 4.0)  # the MobileNetV2 width multiplier, (low, high]
MODEL_POINTS = (68, 98)
# box calibrations (asmnet.detection.calibration): centre offset in detector sizes, size ratio, h / w
MAX_CALIBRATION_OFFSET, CALIBRATION_SCALES, CALIBRATION_ASPECTS = 2.0, (0.05, 20.0), (0.2, 5.0)
# the shape model, in normalised crop units: mean point, basis entries (orthonormal), variances
MAX_SHAPE_MEAN, MAX_SHAPE_COMPONENT, MAX_SHAPE_VARIANCE = 4.0, 1.0 + 1e-6, 100.0


def _whole(value: object) -> int:
    """An integer field of model.json (``128`` or ``128.0``); ValueError for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


@dataclass
class ModelInfo:
    """What a landmark model expects and carries, from model.json or a checkpoint."""

    name: str
    input_size: int
    crop_scale: float
    markup: Markup
    shape_model: ShapeModel
    model_config: dict = field(default_factory=dict)
    calibrations: Calibrations = field(default_factory=Calibrations)  # parsed once, at load
    quality_threshold: float | None = None  # the default pipeline's quality_thresholds entry
    # quality score kind (inference.quality_kind) -> score above which a face is flagged
    quality_thresholds: dict = field(default_factory=dict)
    # the learned score's coefficients (model.json quality_model); needs the graph's error output
    quality_model: QualityModel | None = None
    label_origin: float = 0.0  # added to predictions: the training files' pixel convention (1 = iBUG .pts)
    card: dict = field(default_factory=dict)
    # the pixel convention the predictions (label_origin added back) and reference boxes are in:
    # label_origin, except for a model trained without the origin fix (paper224: its 1-based
    # .pts labels were taken as 0-based, so label_origin is 0 and its outputs are 1-based)
    annotation_origin: float | None = None

    def __post_init__(self) -> None:
        if self.annotation_origin is None:
            self.annotation_origin = self.label_origin
        # a plain {detector: {...}} dict becomes Calibrations here, so every lookup sees parsed entries
        if not isinstance(self.calibrations, Calibrations):
            self.calibrations = Calibrations.from_json(self.calibrations)

    def to_json(self) -> dict[str, Any]:
        """The ``model.json`` document of this model (plain JSON values)."""
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "name": self.name,
            "input": {"name": "image", "layout": "NCHW", "channels": "RGB", "dtype": "float32",
                      "range": [0, 255], "size": self.input_size},
            "outputs": {"landmarks": "normalised crop units (B, 2N)", "pose": "yaw, pitch, roll in degrees",
                        **({"error": ERROR_OUTPUT_DESCRIPTION} if self.quality_model else {})},
            "input_size": self.input_size,
            "crop_scale": self.crop_scale,
            "label_origin": self.label_origin,
            "annotation_origin": self.annotation_origin,
            "num_points": self.markup.n_points,
            "model_config": self.model_config,
            "shape_model": self.shape_model.to_dict(),
            "calibrations": Calibrations.from_json(self.calibrations).to_json(),
            "quality_threshold": self.quality_threshold,
            **({"quality_thresholds": self.quality_thresholds} if self.quality_thresholds else {}),
            **({"quality_model": self.quality_model.to_json()} if self.quality_model else {}),
            "card": self.card,
        }

    @classmethod
    def from_json(cls, data: dict, source: str | Path) -> ModelInfo:
        """Parse a ``model.json`` document read from ``source``; :class:`ModelError` (naming
        ``source``) when it is not an asmnet model description, of another version or malformed."""
        if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
            raise ModelError(source, "not an asmnet model.json")
        if data.get("version") != MODEL_VERSION:
            raise ModelError(source, f"model format version {data.get('version')!r}; this asmnet reads {MODEL_VERSION}")
        try:
            points = int(data["num_points"])
            info = cls(
                name=str(data.get("name", Path(source).parent.name)),
                input_size=_whole(data["input_size"]),
                crop_scale=float(data["crop_scale"]),
                markup=markup_for(points),
                shape_model=ShapeModel.from_dict(data["shape_model"], source),
                model_config=dict(data.get("model_config", {})),
                calibrations=Calibrations.from_json(data.get("calibrations"), source),
                quality_threshold=data.get("quality_threshold"),
                quality_thresholds=_quality_thresholds(data.get("quality_thresholds"), source),
                quality_model=QualityModel.from_json(data.get("quality_model"), source),
                label_origin=float(data.get("label_origin", 0.0)),
                card=dict(data.get("card") or {}),
                annotation_origin=None if data.get("annotation_origin") is None else float(data["annotation_origin"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(source, f"model.json is malformed ({exc})") from None
        if info.shape_model.n_points != points:
            raise ModelError(source, f"shape model has {info.shape_model.n_points} points, the model {points}")
        info.check(source)
        return info

    def check(self, source: str | Path | None, what: str = "model.json") -> None:
        """ModelError (naming ``source``, ``what`` it is and the field) for any number no real
        model holds: each must be finite and in its range (the constants above). Checked once, at
        load, before anything is built from the values."""

        def check_range(name: str, value: object, low: float, high: float, low_open: bool = False) -> None:
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or not low <= value <= high or (low_open and value == low):
                span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
                raise ModelError(source, f"{what} {name} {value!r} is not a finite number in {span}")

        check_range("input_size", self.input_size, *INPUT_SIZES)
        check_range("crop_scale", self.crop_scale, *CROP_SCALES)
        check_range("label_origin", self.label_origin, *ORIGINS)
        check_range("annotation_origin", self.annotation_origin, *ORIGINS)
        if self.quality_threshold is not None:
            check_range("quality_threshold", self.quality_threshold, 0.0, MAX_QUALITY_THRESHOLD)
        for kind, value in self.quality_thresholds.items():
            check_range(f"quality_thresholds.{kind}", value, 0.0, MAX_QUALITY_THRESHOLD, low_open=True)
        check_model_config(self.model_config, source, what)
        for name in self.calibrations:
            calibration = self.calibrations[name]
            for field_name in ("dx", "dy"):
                check_range(f"calibrations.{name}.{field_name}", getattr(calibration, field_name),
                            -MAX_CALIBRATION_OFFSET, MAX_CALIBRATION_OFFSET)
            check_range(f"calibrations.{name}.scale", calibration.scale, *CALIBRATION_SCALES)
            check_range(f"calibrations.{name}.aspect", calibration.aspect, *CALIBRATION_ASPECTS)
        shape = self.shape_model
        check_range("shape_model.variance_share", shape.variance_share, 0.0, 1.0, low_open=True)
        for name, values, high in (("mean", shape.mean, MAX_SHAPE_MEAN), ("components", shape.components,
                                   MAX_SHAPE_COMPONENT), ("eigenvalues", shape.eigenvalues, MAX_SHAPE_VARIANCE)):
            if values.size and np.abs(values).max() > high:
                raise ModelError(source, f"{what} shape_model.{name} holds {np.abs(values).max():g}, beyond +-{high:g} "
                                 "(normalised crop units)")

    @classmethod
    def from_checkpoint(cls, ckpt: dict, source: str | Path | None) -> ModelInfo:
        """The description of a checkpoint (its numbers checked: ModelError). It has the box
        calibrations its export would get when they need no fitting (:func:`shipped_calibrations_for`:
        68 points in the .pts convention), and no quality threshold (``Face.flagged`` is None)."""
        config = ckpt.get("model_config")
        try:
            check_model_config(config, source, "checkpoint")
            info = cls(
                name=Path(source).stem if source is not None else "checkpoint",
                input_size=_whole(ckpt["input_size"]),
                crop_scale=float(ckpt["crop_scale"]),
                markup=markup_for(_whole(config["num_points"])),
                shape_model=ShapeModel.from_dict(ckpt["shape_model"], source),
                model_config=dict(config),
                label_origin=float(ckpt.get("label_origin", 0.0)),
                card={k: ckpt[k] for k in ("train_config", "epoch", "best_nme", "git_commit") if k in ckpt},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(source, f"checkpoint is malformed ({exc})") from None
        info.check(source, "checkpoint")  # before the calibrations: they are chosen by the origin checked here
        shipped = shipped_calibrations_for(info)
        if shipped is not None:
            info.calibrations = shipped
            info.card["box_calibrations"] = SHIPPED_CALIBRATION_SOURCE
        return info


# model.json's calibration_source (and the card's box_calibrations) for the shipped calibrations
SHIPPED_CALIBRATION_SOURCE = {
    "kind": "shipped", "file": "asmnet/models/detector_calibration.json",
    "why": f"{SHIPPED_CALIBRATION_POINTS} iBUG points in the .pts convention (first pixel's centre "
           f"{SHIPPED_CALIBRATION_ORIGIN:g}): the model's reference box is the one the shipped calibrations were fitted "
           "to, whatever the network"}


def shipped_calibrations_for(info: ModelInfo) -> Calibrations | None:
    """The shipped detector box calibrations when they hold for this model (68 points whose
    predictions are in the .pts convention: the reference box they were fitted to), else None
    (a package must fit its own: ``asmnet export``). ModelError when the shipped file is bad."""
    if info.markup.n_points != SHIPPED_CALIBRATION_POINTS or info.annotation_origin != SHIPPED_CALIBRATION_ORIGIN:
        return None
    from .detection.calibration import load_calibrations

    return load_calibrations()


def check_model_config(config: Any, source: str | Path, what: str = "model.json") -> None:
    """ModelError unless ``config`` (a network's ``model_config``) is a mapping whose numbers
    are in range: ``num_points`` 68 or 98, ``width`` in (0, 4], ``dropout`` in [0, 1). Checked
    before a network is built from it, so that a bad width never allocates anything. An empty
    mapping (a model.json that does not say) passes."""
    if not isinstance(config, dict):
        raise ModelError(source, f"{what} model_config is not a mapping")
    if not config:
        return
    points, width, dropout = config.get("num_points"), config.get("width", 1.0), config.get("dropout", 0.0)
    if isinstance(points, bool) or points not in MODEL_POINTS:
        raise ModelError(source, f"{what} model_config num_points {points!r} is not one of {MODEL_POINTS}")
    real = (int, float, np.integer, np.floating)
    low, high = MODEL_WIDTHS
    if isinstance(width, bool) or not isinstance(width, real) or not math.isfinite(width) or not low < width <= high:
        raise ModelError(source, f"{what} model_config width {width!r} is not a finite number in ({low:g}, {high:g}]")
    if isinstance(dropout, bool) or not isinstance(dropout, real) or not 0.0 <= dropout < 1.0:
        raise ModelError(source, f"{what} model_config dropout {dropout!r} is not a number in [0, 1)")


def _quality_thresholds(data: Any, source: str | Path) -> dict[str, float]:
    """model.json's ``quality_thresholds``: score kind -> positive finite number (absent: none)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ModelError(source, f"quality_thresholds must be an object, got {type(data).__name__}")
    out = {}
    for kind, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise ModelError(source, f"quality_thresholds: {kind} must be a positive number, got {value!r}")
        out[str(kind)] = float(value)
    return out


def read_model_json(path: Path) -> ModelInfo:
    """Read and parse a ``model.json``; :class:`ModelError` when it is unreadable or malformed."""
    data = read_small_json(path, "model description", error=ModelError)
    return ModelInfo.from_json(data, path)



def read_model_document(path: str | Path) -> dict[str, Any]:
    """The ``model.json`` at ``path`` as its plain JSON document (every field, card included),
    checked as :func:`read_model_json` checks it; :class:`ModelError` when it is unreadable or
    malformed."""
    data = read_small_json(path, "model description", error=ModelError)
    ModelInfo.from_json(data, path)
    return data  # type: ignore[return-value]


def write_model_json(path: str | Path, document: dict[str, Any]) -> ModelInfo:
    """Check ``document`` as a ``model.json`` (:meth:`ModelInfo.from_json`) and write it to ``path``
    atomically. Returns its parsed :class:`ModelInfo`; raises :class:`ModelError` (nothing
    written) when it is not one this asmnet loads, OutputError when it cannot be written."""
    info = ModelInfo.from_json(document, path)
    write_json_atomic(path, document)
    return info


@contextmanager
def edit_model_json(path: str | Path) -> Iterator[dict[str, Any]]:
    """``with edit_model_json(path) as document:`` change the document, and it is written back
    (:func:`write_model_json`) when the block ends without an exception. Raises
    :class:`ModelError` when the file is not a valid model.json, before or after the change."""
    document = read_model_document(path)
    yield document
    write_model_json(path, document)


def set_quality_model(document: dict[str, Any], quality_model: dict[str, Any]) -> None:
    """Give a model.json document the learned quality score of a graph with an error head: its
    ``quality_model`` and the ``error`` output's description."""
    document["outputs"]["error"] = ERROR_OUTPUT_DESCRIPTION
    document["quality_model"] = quality_model


def drop_learned_thresholds(document: dict[str, Any]) -> list[str]:
    """Remove the learned-score thresholds (and the default one) from a model.json document,
    whose error head changed: thresholds measured on another head's scores would flag the wrong
    share. Returns the kinds removed."""
    stale = [kind for kind in document.get("quality_thresholds") or {} if kind in LEARNED_KINDS]
    for kind in stale:
        del document["quality_thresholds"][kind]
    if document.get("quality_threshold") is not None:
        document["quality_threshold"] = None
    return stale


def set_quality_thresholds(document: dict[str, Any], thresholds: dict[str, float], default_kind: str) -> None:
    """Store each score kind's threshold in a model.json document, and the ``default_kind``'s
    as ``quality_threshold`` (what the default pipeline flags with). KeyError when
    ``thresholds`` has no ``default_kind``."""
    document["quality_thresholds"] = thresholds
    document["quality_threshold"] = thresholds[default_kind]
