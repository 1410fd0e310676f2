"""The error head in an exported graph: one linear layer on the pooled features, output ``error``.

The head reads the tensor the linear heads read (the input of the Gemm that writes ``landmarks``,
or ``pose`` in a grid-head graph: the pooled, concatenated features, float even in the INT8
graphs) and writes
``error`` (B, 1), an estimate of ln(NME %) of the crop's landmarks (:mod:`asmnet.quality`). It is
added after export (``scripts/fit_quality.py`` fits it), so nothing that computes ``landmarks``
or ``pose`` changes: those outputs stay bit-identical. ONNX and NumPy only (no torch).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..package import ERROR_OUTPUT

WEIGHT, BIAS, NODE = "error_head.weight", "error_head.bias", "/error_head/Gemm"
FEATURES_OUTPUT = "features"


def _pooled_head(model: onnx.ModelProto) -> onnx.NodeProto:
    """The linear head on the pooled features: the landmark head, or with a grid head the pose
    head; ValueError when there is none (not an asmnet graph)."""
    for output in ("landmarks", "pose"):
        for node in model.graph.node:
            if output in node.output and node.op_type in ("Gemm", "MatMul"):
                return node
    raise ValueError("no Gemm / MatMul node writes 'landmarks' or 'pose'")


def features_tensor(model: onnx.ModelProto) -> str:
    """The name of the pooled features tensor (see :func:`_pooled_head`)."""
    return _pooled_head(model).input[0]


def has_error_head(model: onnx.ModelProto) -> bool:
    return any(o.name == ERROR_OUTPUT for o in model.graph.output)


def strip_error_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without the error head (the graph as exported); the same graph when it has none."""
    out = copy.deepcopy(model)
    g = out.graph
    keep_nodes = [n for n in g.node if n.name != NODE]
    del g.node[:]
    g.node.extend(keep_nodes)
    keep_init = [i for i in g.initializer if i.name not in (WEIGHT, BIAS)]
    del g.initializer[:]
    g.initializer.extend(keep_init)
    keep_out = [o for o in g.output if o.name != ERROR_OUTPUT]
    del g.output[:]
    g.output.extend(keep_out)
    return out


def attach_error_head(model: onnx.ModelProto, weight: np.ndarray, bias: float) -> onnx.ModelProto:
    """A copy of ``model`` (any error head it has replaced) with ``error = features @ weight + bias``
    as a third output (B, 1), float32. ValueError when ``weight`` does not match the features."""
    out = strip_error_head(model)
    feats = features_tensor(out)
    weight = np.asarray(weight, dtype=np.float32).reshape(1, -1)
    width = _feature_width(out, feats)
    if width is not None and weight.shape[1] != width:
        raise ValueError(f"error head has {weight.shape[1]} weights, the features {width} values")
    if not (np.isfinite(weight).all() and np.isfinite(bias)):
        raise ValueError("error head weights must be finite")
    g = out.graph
    g.initializer.extend([numpy_helper.from_array(weight, WEIGHT),
                          numpy_helper.from_array(np.array([bias], dtype=np.float32), BIAS)])
    g.node.append(helper.make_node("Gemm", [feats, WEIGHT, BIAS], [ERROR_OUTPUT], name=NODE, transB=1))
    batch = g.output[0].type.tensor_type.shape.dim[0]
    dim = batch.dim_param or batch.dim_value or "batch"
    g.output.append(helper.make_tensor_value_info(ERROR_OUTPUT, TensorProto.FLOAT, [dim, 1]))
    onnx.checker.check_model(out)
    return out


def error_head_weights(model: onnx.ModelProto) -> tuple[np.ndarray, float] | None:
    """The error head's (weight (F,), bias) of a graph, or None when it has none."""
    if not has_error_head(model):
        return None
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in (WEIGHT, BIAS)}
    return init[WEIGHT].reshape(-1).astype(np.float64), float(init[BIAS].reshape(-1)[0])


def expose_features(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the graph without error head that also returns the features the heads read, as
    ``features`` (B, F): what the error head is fitted on."""
    out = strip_error_head(model)
    feats = features_tensor(out)
    out.graph.node.append(helper.make_node("Identity", [feats], [FEATURES_OUTPUT], name="/features/Identity"))
    out.graph.output.append(helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, ["batch", None]))
    return out


def _feature_width(model: onnx.ModelProto, feats: str) -> int | None:
    """Columns of the pooled head's weight (the feature width), when it is an initializer."""
    node = _pooled_head(model)
    w = {i.name: i for i in model.graph.initializer}.get(node.input[1])
    if w is None:
        return None
    dims = list(w.dims)
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return dims[1] if (node.op_type == "Gemm" and trans_b) else dims[0]


def fit_ridge(features: np.ndarray, target: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge regression on standardised features: (weight (F,), bias) on the raw features, so that
    ``features @ weight + bias`` predicts ``target``. ``alpha`` in units of standardised features."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    weight = w / sd
    return weight, float(y.mean() - mu @ weight)
