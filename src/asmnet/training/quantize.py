"""INT8 export: ONNX Runtime static quantisation (QDQ, per-channel weights), calibrated on faces."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..fileio import write_atomic, write_json_atomic
from ..formats import FaceRecord, read_image
from ..geometry import tight_box
from ..inference import crop_faces
from ..runtime import load_model, read_model_json


@dataclass
class QuantizeResult:
    """What :func:`quantize_package` wrote."""

    out: Path  # the INT8 package folder
    calibration_faces: int  # faces the activation ranges were calibrated on
    bytes_float: int  # size of the float model.onnx
    bytes_int8: int  # size of the INT8 model.onnx


def calibration_crops(records: list[FaceRecord], package: Path, count: int, seed: int = 0) -> np.ndarray:
    """NCHW float32 crops of ``count`` faces chosen deterministically, cropped as at inference."""
    info = read_model_json(package / "model.json")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(records))[:count]
    crops = []
    for i in chosen:
        rec = records[int(i)]
        image = read_image(rec.image)
        crops.append(crop_faces(image, tight_box(rec.points)[None], info)[0][0])
    return np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2)


@contextmanager
def _no_root_logging_setup() -> Iterator[None]:
    """onnxruntime's quantiser logs through ``logging.warning``, which installs a stderr handler on
    an unconfigured root logger (``WARNING:root:Please consider to run pre-processing ...``). A
    temporary NullHandler keeps the root logger configured-looking, so nothing is printed and the
    application's logging setup is left as it was; an application that configured logging itself
    still gets the messages."""
    root = logging.getLogger()
    quiet = logging.NullHandler() if not root.handlers else None
    if quiet is not None:
        root.addHandler(quiet)
    try:
        yield
    finally:
        if quiet is not None:
            root.removeHandler(quiet)


def quantize_package(
    package: str | Path, out: str | Path, records: list[FaceRecord], count: int = 300
) -> QuantizeResult:
    """Copy a float package to ``out`` with an INT8 model.onnx calibrated on ``count`` of ``records``.

    Returns a :class:`QuantizeResult`. Raises :class:`ModelError` when there are no faces to
    calibrate on or the result does not load, :class:`DataError` when a calibration image is
    unreadable.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    package, out = Path(package), Path(out)
    if not records:
        raise ModelError(package, "INT8 calibration needs annotated faces (--calib-data)")
    crops = calibration_crops(records, package, count)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": crops[i : i + 16]} for i in range(0, len(crops), 16)])

        def get_next(self):
            return next(self.batches, None)

    def write_int8(tmp: Path) -> None:
        with _no_root_logging_setup():
            quantize_static(str(package / "model.onnx"), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

    write_atomic(out / "model.onnx", write_int8)
    meta = read_model_json(package / "model.json").to_json()
    meta["name"] = out.name
    meta["card"] = {**meta.get("card", {}), "precision": "int8 (ONNX Runtime static QDQ, per-channel)",
                    "int8_calibration_faces": len(crops), "float_model": str(package)}
    write_json_atomic(out / "model.json", meta)
    for extra in ("weights.pt",):
        if (package / extra).exists() and package != out:
            shutil.copy2(package / extra, out / extra)
    load_model(out, backend="onnx")  # validates the result
    return QuantizeResult(out=out, calibration_faces=len(crops), bytes_float=(package / "model.onnx").stat().st_size,
                          bytes_int8=(out / "model.onnx").stat().st_size)
