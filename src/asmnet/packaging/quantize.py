"""INT8 export: ONNX Runtime static quantisation (QDQ, per-channel weights), calibrated on faces.

The backbone runs in INT8; the pooled features, their concatenation and the two linear heads
(:data:`FLOAT_OPS`) stay float. Quantising the heads' outputs to 8 bits per tensor clamped every
value outside the calibration faces' range (jaw points stuck on one x at the crop edge, yaw cut
off near +-45 deg) and rounded the rest to a grid (0.0036 crop units, about 1 px; pose in 0.38 deg
steps). Keeping them float costs nothing measurable: they are about 0.1 % of the network's work.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..fileio import write_atomic
from ..formats import FaceRecord, read_image
from ..geometry import tight_box
from ..inference import crop_faces
from ..package import read_model_json, write_model_json
from ..runtime import load_model

#: ONNX op types left in float: global pooling of the tapped features, flatten, concat, the heads.
FLOAT_OPS = ("GlobalAveragePool", "Flatten", "Concat", "Gemm")
#: Nodes of a grid head left in float (all but its fuse convs): 8-bit offsets would move points
#: in steps of ~1 % of the eye distance, and the softmax decode needs float scores.
GRID_FLOAT_PREFIX, GRID_INT8_PREFIX = "/grid_head/", "/grid_head/fuse/"
PRECISION = "int8 (ONNX Runtime static QDQ, per-channel weights; pooling and heads in float)"


def float_node_names(graph) -> list[str]:
    """Names of the nodes of an exported float graph that the INT8 graph keeps in float."""
    return [n.name for n in graph.node if n.op_type in FLOAT_OPS
            or (n.name.startswith(GRID_FLOAT_PREFIX) and not n.name.startswith(GRID_INT8_PREFIX))]


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


def quantized_outputs(onnx_path: str | Path) -> list[str]:
    """Names of the graph outputs that come out of a DequantizeLinear (8-bit values, clamped to a range)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    return [o.name for o in graph.output if producer.get(o.name) == "DequantizeLinear"]


def float_head(model):
    """Remove the activation QuantizeLinear/DequantizeLinear pairs after :data:`FLOAT_OPS` nodes of
    a QDQ ``onnx.ModelProto`` in place, so pooling, concat and heads compute and return float.

    For INT8 graphs whose float model is gone (the weights of those ops stay as they were
    quantised). Returns how many nodes were removed.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed, rename = [], {}
    for q in graph.node:
        src = producer.get(q.input[0]) if q.op_type == "QuantizeLinear" else None
        dqs = consumers.get(q.output[0], []) if src is not None else []
        if src is None or src.op_type not in FLOAT_OPS or not dqs or any(d.op_type != "DequantizeLinear" for d in dqs):
            continue
        removed += [q, *dqs]
        rename.update({d.output[0]: q.input[0] for d in dqs})
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
    # a graph output keeps its name: the float producer now writes it directly
    outputs = {o.name for o in graph.output}
    for dq_out, float_name in rename.items():
        if dq_out in outputs:
            node = producer[float_name]
            node.output[:] = [dq_out if o == float_name else o for o in node.output]
            for other in graph.node:
                other.input[:] = [dq_out if name == float_name else name for name in other.input]
    for node in removed:
        graph.node.remove(node)
    return len(removed)


def quantize_package(
    package: str | Path, out: str | Path, records: list[FaceRecord], count: int = 300, name: str | None = None
) -> QuantizeResult:
    """Copy a float package to ``out`` with an INT8 model.onnx calibrated on ``count`` of ``records``;
    its model.json names it ``name`` (default: ``out``'s folder name).

    Returns a :class:`QuantizeResult`. Raises :class:`ModelError` when there are no faces to
    calibrate on, the result has 8-bit outputs or does not load, :class:`DataError` when a
    calibration image is unreadable.
    """
    import onnx
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

    float_nodes = float_node_names(onnx.load(str(package / "model.onnx")).graph)

    def write_int8(tmp: Path) -> None:
        # min-max calibration: every activation range covers the calibration faces entirely
        with _no_root_logging_setup():
            quantize_static(str(package / "model.onnx"), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=float_nodes)
        if quantized_outputs(tmp):
            raise ModelError(out / "model.onnx", f"INT8 outputs {quantized_outputs(tmp)} would be clamped to 8 bits")

    write_atomic(out / "model.onnx", write_int8)
    meta = read_model_json(package / "model.json").to_json()
    meta["name"] = name or out.name
    meta["card"] = {**meta.get("card", {}), "precision": PRECISION,
                    "int8_calibration_faces": len(crops), "float_model": str(package)}
    write_model_json(out / "model.json", meta)
    for extra in ("weights.pt",):
        if (package / extra).exists() and package != out:
            shutil.copy2(package / extra, out / extra)
    load_model(out, backend="onnx")  # validates the result
    return QuantizeResult(out=out, calibration_faces=len(crops), bytes_float=(package / "model.onnx").stat().st_size,
                          bytes_int8=(out / "model.onnx").stat().st_size)
