"""Parameter and multiply-add counts from a model's ONNX graph, without torch or the onnx package.

``asmnet info`` must work on the torch-free install, where only ONNX Runtime is present, and ONNX
Runtime does not expose a graph. An ``.onnx`` file is a protobuf ``ModelProto``; the few fields
needed here (nodes, their inputs and attributes, initializer shapes) are read with a minimal
protobuf wire-format decoder. Counted as in :mod:`asmnet.nn.complexity`: Conv and Gemm/MatMul
only (``k*k*cin/groups*cout*Hout*Wout`` and ``in*out``), for one image. Weights behind
``DequantizeLinear`` (INT8 models) count as the weights they stand for. BatchNorm is folded into
the convolutions in an exported graph, so the parameter count is that of the inference graph
(fewer than the PyTorch model's, whose BatchNorm layers hold 2 parameters per channel).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelError

# protobuf field numbers (onnx/onnx.proto)
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT = 1, 5, 11
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 1, 2, 4, 5
_ATTR_NAME, _ATTR_INT, _ATTR_INTS = 1, 3, 8
_TENSOR_DIMS, _TENSOR_NAME = 1, 8


@dataclass
class Node:
    op_type: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attributes: dict[str, list[int]] = field(default_factory=dict)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes otherwise."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _ints(wire: int, value: int | bytes) -> list[int]:
    """A repeated int64 field's values, packed or not (two's complement for negatives)."""
    if wire == 0:
        values = [int(value)]
    else:
        values, pos = [], 0
        while pos < len(value):
            v, pos = _varint(value, pos)
            values.append(v)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def _node(buf: bytes) -> Node:
    node = Node("")
    for number, _wire, value in _fields(buf):
        if number == _NODE_INPUT:
            node.inputs.append(value.decode())
        elif number == _NODE_OUTPUT:
            node.outputs.append(value.decode())
        elif number == _NODE_OP_TYPE:
            node.op_type = value.decode()
        elif number == _NODE_ATTRIBUTE:
            name, ints = "", []
            for n, w, v in _fields(value):
                if n == _ATTR_NAME:
                    name = v.decode()
                elif n in (_ATTR_INT, _ATTR_INTS):
                    ints += _ints(w, v)
            node.attributes[name] = ints
    return node


def read_graph(path: str | Path) -> tuple[list[Node], dict[str, tuple[int, ...]], list[str]]:
    """The nodes (in file order, which ONNX keeps topological), initializer shapes and input
    names of a graph. Raises ModelError for a file that is not an ONNX model."""
    try:
        data = Path(path).read_bytes()
        graph = next((v for n, w, v in _fields(data) if n == _MODEL_GRAPH and w == 2), None)
        if graph is None:
            raise ValueError("no graph")
        nodes, shapes, inputs = [], {}, []
        for number, _wire, value in _fields(graph):
            if number == _GRAPH_NODE:
                nodes.append(_node(value))
            elif number == _GRAPH_INPUT:
                inputs += [v.decode() for n, w, v in _fields(value) if n == 1]
            elif number == _GRAPH_INITIALIZER:
                dims, name = [], ""
                for n, w, v in _fields(value):
                    if n == _TENSOR_DIMS:
                        dims += _ints(w, v)
                    elif n == _TENSOR_NAME:
                        name = v.decode()
                shapes[name] = tuple(dims)
    except OSError as exc:
        raise ModelError(path, f"cannot read the ONNX file ({exc.strerror or exc})") from None
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ModelError(path, f"not an ONNX model ({exc})") from None
    return nodes, shapes, [name for name in inputs if name not in shapes]


def count_onnx(path: str | Path, input_size: int) -> tuple[int, int]:
    """(parameters, multiply-adds) of the ONNX graph at ``path`` for one ``input_size`` image.

    Parameters: the elements of the Conv and Gemm/MatMul weights and biases. Raises ModelError
    for an unreadable file or a graph whose shapes cannot be followed."""
    nodes, shapes, inputs = read_graph(path)
    if len(inputs) != 1:
        raise ModelError(path, f"expected one image input, the graph has {len(inputs)}")
    dequantized = {n.outputs[0]: n.inputs[0] for n in nodes if n.op_type == "DequantizeLinear"}

    def weight_shape(name: str) -> tuple[int, ...]:
        name = dequantized.get(name, name)
        if name not in shapes:
            raise ModelError(path, f"weight {name!r} is not a constant of the graph")
        return shapes[name]

    # tensor -> (H, W) while it is an image-like tensor
    spatial: dict[str, tuple[int, int]] = {inputs[0]: (input_size, input_size)}
    params = macs = 0
    for node in nodes:
        known = next((spatial[x] for x in node.inputs if x in spatial), None)
        if node.op_type == "Conv":
            w = weight_shape(node.inputs[1])
            params += int(np.prod(w)) + (int(np.prod(weight_shape(node.inputs[2]))) if len(node.inputs) > 2 else 0)
            if known is None:
                raise ModelError(path, f"cannot follow the image size to Conv {node.outputs[0]!r}")
            kernel = node.attributes.get("kernel_shape") or list(w[2:])
            strides = node.attributes.get("strides") or [1, 1]
            dil = node.attributes.get("dilations") or [1, 1]
            pads = node.attributes.get("pads") or [0, 0, 0, 0]
            out = tuple((known[a] + pads[a] + pads[a + 2] - dil[a] * (kernel[a] - 1) - 1) // strides[a] + 1
                        for a in range(2))
            spatial[node.outputs[0]] = out
            macs += int(np.prod(w)) * out[0] * out[1]
        elif node.op_type in ("Gemm", "MatMul"):
            w = weight_shape(node.inputs[1])
            params += int(np.prod(w)) + (int(np.prod(weight_shape(node.inputs[2]))) if len(node.inputs) > 2 else 0)
            macs += int(np.prod(w))
        elif node.op_type == "GlobalAveragePool":
            spatial[node.outputs[0]] = (1, 1)
        elif node.op_type in ("Flatten", "Reshape"):
            continue  # no longer an image
        elif known is not None:
            for out_name in node.outputs:
                spatial[out_name] = known
    return params, macs
