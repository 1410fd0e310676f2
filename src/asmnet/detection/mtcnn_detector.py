"""MTCNN (Zhang et al. 2016): a three-stage cascade of small CNNs, run torch-free in ONNX Runtime.

The weights are those of the ``mtcnn`` package (MIT licence; a core dependency of asmnet): three
lz4-compressed joblib lists of NumPy arrays in Keras layout, read from the installed package at
run time (never copied into this repository, never downloaded). Here they become three ONNX graphs
built in memory (:func:`pnet_graph`, :func:`rnet_graph`, :func:`onet_graph`); the image pyramid,
non-maximum suppression and box regression are NumPy (:func:`pyramid_scales`, :func:`nms`).

Stages: P-Net runs fully convolutionally over a pyramid of the image (a 12 px window every 2 px
at each scale; the first scale shows a ``min_face`` px face at 10-18 px, so its cost grows with
image pixels / min_face²), proposing boxes; R-Net (24 x 24 crops) and O-Net (48 x 48 crops) rescore and
refine them. The score is O-Net's face probability.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import ModelError
from .base import Detection, FaceDetector, by_score, check_image

WEIGHT_FILES = {"pnet": "pnet.lz4", "rnet": "rnet.lz4", "onet": "onet.lz4"}
PNET_CELL, PNET_STRIDE = 12, 2
# the reference MTCNN's P-Net threshold and pyramid step: the retry's settings (see MtcnnDetector)
DENSE = (0.6, 0.709)
# P-Net fires on faces down to ~10 px in its 12 px window: from the default 48 px level (48 -> 12
# px) it found every 40 px face (10 px there) of 60 collages, but 2 of 60 from 56 px (8.6 px)
PNET_MIN_PX = 10.0
# the pyramids' common grid passes through the default's first level (48 px -> 12 px), which
# keeps the default's scales as they were measured
GRID_ANCHOR = PNET_CELL / 48


def mtcnn_weights_dir() -> Path | None:
    """``mtcnn/assets/weights`` of the installed ``mtcnn`` package, else None (found without importing it:
    its ``__init__`` imports TensorFlow)."""
    try:
        spec = importlib.util.find_spec("mtcnn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"
    return folder if all((folder / f).is_file() for f in WEIGHT_FILES.values()) else None


def mtcnn_problem() -> str | None:
    """Why the MTCNN detector cannot run here, or None."""
    if mtcnn_weights_dir() is None:
        return "needs the weights of the mtcnn package (pip install mtcnn==1.0.0)"
    for module in ("joblib", "onnx"):
        if importlib.util.find_spec(module) is None:
            return f"needs {module} (pip install {module})"
    return None


def load_mtcnn_weights(folder: Path | None = None) -> dict[str, list[np.ndarray]]:
    """The three nets' weight lists (Keras layout, float32) from the mtcnn package; ModelError if absent."""
    problem = mtcnn_problem() if folder is None else None
    folder = folder or mtcnn_weights_dir()
    if problem or folder is None:
        raise ModelError(None, f"the mtcnn detector {problem or 'needs the mtcnn package'}")
    import joblib

    weights = {}
    for net, file in WEIGHT_FILES.items():
        try:
            arrays = joblib.load(folder / file)
        except Exception as exc:  # joblib/lz4 raise many types for a damaged file
            raise ModelError(folder / file, f"cannot read MTCNN weights ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        if not isinstance(arrays, list) or not all(isinstance(a, np.ndarray) for a in arrays):
            raise ModelError(folder / file, "not a list of NumPy arrays (expected mtcnn 1.0.0's weight format)")
        weights[net] = [np.asarray(a, dtype=np.float32) for a in arrays]
    return weights


# ---------------------------------------------------------------------------------------------
# The three nets as ONNX graphs (uint8 BGR NHWC input; colour order and normalisation are inside)
# ---------------------------------------------------------------------------------------------


class _GraphBuilder:
    """A few lines per layer: Keras-layout arrays in, ONNX nodes and initializers out."""

    def __init__(self, weights: list[np.ndarray]):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.weights = list(weights)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def _take(self, shape_len: int) -> np.ndarray:
        array = self.weights.pop(0)
        if array.ndim != shape_len:
            raise ModelError(None, f"MTCNN weights: expected a {shape_len}-d array, got shape {array.shape}")
        return array

    def _const(self, array: np.ndarray) -> str:
        self.count += 1
        name = f"w{self.count}"
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def _node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(self.helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str) -> str:
        kernel, bias = self._take(4), self._take(1)  # HWIO, (O,)
        return self._node("Conv", [x, self._const(kernel.transpose(3, 2, 0, 1)), self._const(bias)])

    def input_conv(self) -> str:
        """The first conv, on the raw uint8 BGR NHWC input: MTCNN's RGB order and (x - 127.5) / 128
        are folded into its weights (exact: the conv has no padding), so no pass over the image is
        spent converting colours or normalising."""
        kernel, bias = self._take(4), self._take(1)
        kernel = kernel[:, :, ::-1, :]  # the nets were trained on RGB: read channel 2 as red
        x = self._node("Transpose", [self._node("Cast", ["image"], to=1)], perm=[0, 3, 1, 2])
        folded_bias = bias - (127.5 / 128.0) * kernel.sum(axis=(0, 1, 2))
        return self._node("Conv", [x, self._const(kernel.transpose(3, 2, 0, 1) / 128.0), self._const(folded_bias)])

    def prelu(self, x: str, spatial: bool = True) -> str:
        slope = self._take(3 if spatial else 1).reshape(-1)
        return self._node("PRelu", [x, self._const(slope.reshape(-1, 1, 1) if spatial else slope)])

    def pool(self, x: str, size: int, same: bool) -> str:
        # Keras "same" pads at the end when the padding is odd: ONNX SAME_UPPER
        pad = {"auto_pad": "SAME_UPPER"} if same else {}
        return self._node("MaxPool", [x], kernel_shape=[size, size], strides=[2, 2], **pad)

    def dense(self, x: str) -> str:
        kernel, bias = self._take(2), self._take(1)  # (in, out), (out,)
        return self._node("Add", [self._node("MatMul", [x, self._const(kernel)]), self._const(bias)])

    def flatten_keras(self, x: str) -> str:
        # the nets end with Keras Permute((2, 1, 3)) + Flatten on NHWC: flatten in (W, H, C) order
        return self._node("Flatten", [self._node("Transpose", [x], perm=[0, 3, 2, 1])], axis=1)

    def softmax(self, x: str) -> str:
        return self._node("Softmax", [x], axis=1)

    def model_bytes(self, outputs: dict[str, str], spatial: bool, name: str) -> bytes:
        if self.weights:
            raise ModelError(None, f"MTCNN weights: {len(self.weights)} arrays left over building {name}")
        h = self.helper
        from onnx import TensorProto

        dims = ["n", "h", "w", 3] if spatial else ["n", None, None, 3]

        graph_outputs = [h.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in outputs]
        nodes = self.nodes + [h.make_node("Identity", [v], [k]) for k, v in outputs.items()]
        graph = h.make_graph(nodes, name, [h.make_tensor_value_info("image", TensorProto.UINT8, dims)],
                             graph_outputs, self.inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], producer_name="asmnet")
        model.ir_version = 8
        return model.SerializeToString()


def pnet_graph(weights: list[np.ndarray]) -> bytes:
    """P-Net: uint8 BGR (N, H, W, 3) -> box regression (N, 4, H', W') and face probability (N, 2, H', W')."""
    g = _GraphBuilder(weights)
    x = g.pool(g.prelu(g.input_conv()), 2, same=True)
    x = g.prelu(g.conv(x))
    x = g.prelu(g.conv(x))
    reg = g.conv(x)
    prob = g.softmax(g.conv(x))
    return g.model_bytes({"reg": reg, "prob": prob}, True, "pnet")


def rnet_graph(weights: list[np.ndarray]) -> bytes:
    """R-Net: uint8 BGR (N, 24, 24, 3) -> box regression (N, 4) and face probability (N, 2)."""
    g = _GraphBuilder(weights)
    x = g.pool(g.prelu(g.input_conv()), 3, same=True)
    x = g.pool(g.prelu(g.conv(x)), 3, same=False)
    x = g.prelu(g.conv(x))
    x = g.prelu(g.dense(g.flatten_keras(x)), spatial=False)
    reg = g.dense(x)
    prob = g.softmax(g.dense(x))
    return g.model_bytes({"reg": reg, "prob": prob}, False, "rnet")


def onet_graph(weights: list[np.ndarray]) -> bytes:
    """O-Net: uint8 BGR (N, 48, 48, 3) -> box regression (N, 4), 5 points (N, 10) and face probability (N, 2)."""
    g = _GraphBuilder(weights)
    x = g.pool(g.prelu(g.input_conv()), 3, same=True)
    x = g.pool(g.prelu(g.conv(x)), 3, same=False)
    x = g.pool(g.prelu(g.conv(x)), 2, same=True)
    x = g.prelu(g.conv(x))
    x = g.prelu(g.dense(g.flatten_keras(x)), spatial=False)
    reg = g.dense(x)
    points = g.dense(x)
    prob = g.softmax(g.dense(x))
    return g.model_bytes({"reg": reg, "points": points, "prob": prob}, False, "onet")


# ---------------------------------------------------------------------------------------------
# Pyramid, NMS, boxes (NumPy)
# ---------------------------------------------------------------------------------------------


def pyramid_scales(height: int, width: int, min_face: float, factor: float = 0.709) -> list[float]:
    """Image scales at which P-Net's 12 px window sees faces from ``min_face`` px up to the whole image.

    Every pyramid is cut from one grid, ``GRID_ANCHOR * factor**k`` (k any integer): the first
    level is the coarsest grid scale at which a ``min_face`` px face still measures
    ``PNET_MIN_PX``, each next one ``factor`` times smaller, while the scaled image's shorter side
    still holds a 12 px window. So a smaller ``min_face`` only adds finer levels to a larger one's
    and never finds fewer faces. Raises ValueError unless ``min_face > 0`` and ``0 < factor < 1``.
    """
    if min_face <= 0 or not 0 < factor < 1:
        raise ValueError(f"need min_face > 0 and 0 < factor < 1, got {min_face}, {factor}")
    finest_needed = PNET_MIN_PX / float(min_face)
    # each grid level is computed by the same steps from the anchor for every min_face, so shared
    # levels are bit-identical (and so are their resized images and proposals)
    finer: list[float] = []
    scale = GRID_ANCHOR
    while scale < finest_needed:
        scale /= factor
        finer.append(scale)
    coarser: list[float] = []
    scale = GRID_ANCHOR
    while min(height, width) * scale >= PNET_CELL:
        coarser.append(scale)
        scale *= factor
    grid = [s for s in finer[::-1] + coarser if min(height, width) * s >= PNET_CELL]
    first = sum(1 for s in grid if s >= finest_needed) - 1  # the coarsest level that is fine enough
    return grid[max(first, 0):]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is dropped when its overlap with a kept, higher-scoring box exceeds ``threshold``;
    overlap is IoU (``mode="union"``) or intersection over the smaller area (``"min"``).
    """
    if mode not in ("union", "min"):
        raise ValueError(f"mode must be 'union' or 'min', got {mode!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if len(order) <= 512:  # all overlaps at once: one row lookup per kept box instead of ~8 array ops
        b, a = boxes[order], area[order]
        iw = np.maximum(0.0, np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]))
        ih = np.maximum(0.0, np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]))
        inter = iw * ih
        denom = np.minimum(a[:, None], a[None, :]) if mode == "min" else a[:, None] + a[None, :] - inter
        over = inter > threshold * np.maximum(denom, 1e-12)
        dropped = np.zeros(len(order), dtype=bool)
        kept = []
        for i in range(len(order)):
            if not dropped[i]:
                kept.append(i)
                dropped |= over[i]
        return order[np.asarray(kept, dtype=np.int64)]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        overlap = np.where(denom > 0, inter / np.maximum(denom, 1e-12), 0.0)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes moved by the nets' regression: each edge by its offset x the box's width or height."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    return boxes + offsets * np.concatenate([size, size], axis=1)


def square(boxes: np.ndarray) -> np.ndarray:
    """Squares with the boxes' centres and larger sides (what R-Net and O-Net were trained on)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] / 2
    return np.concatenate([centre - half, centre + half], axis=1)


class Halvings:
    """An image and its successive halvings (pixel-area averaging, uint8): cheap sources for any
    smaller scale, so that no resize ever averages more than 2 x 2 source pixels per output pixel
    (OpenCV's area resize is ~15x slower for large non-integer factors)."""

    def __init__(self, image: np.ndarray):
        self.levels = [image]

    def source(self, scale: float) -> tuple[np.ndarray, float]:
        """The smallest level still at least ``scale`` of the original size, and its own scale."""
        k = max(0, int(math.floor(-math.log2(max(scale, 1e-9)))))
        while len(self.levels) <= k:
            last = self.levels[-1]
            if min(last.shape[:2]) < 4:
                break
            h, w = last.shape[0] // 2, last.shape[1] // 2
            self.levels.append(cv2.resize(last[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA))
        level = self.levels[min(k, len(self.levels) - 1)]
        return level, level.shape[1] / self.levels[0].shape[1]

    def resized(self, scale: float) -> np.ndarray:
        """The whole image at ``scale`` (size rounded up), from the nearest larger halving."""
        height, width = self.levels[0].shape[:2]
        size = (int(math.ceil(width * scale)), int(math.ceil(height * scale)))
        source, _ = self.source(scale)
        return cv2.resize(source, size, interpolation=cv2.INTER_AREA)

    def patches(self, boxes: np.ndarray, size: int) -> np.ndarray:
        """Each box (original pixels) resampled to size x size from a halving where it is at least
        ``size`` px; outside the image is black (as in the original MTCNN).
        Returns (N, size, size, 3) uint8, in the image's channel order."""
        out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
        for i, box in enumerate(boxes):
            side = max(box[2] - box[0], box[3] - box[1])
            source, factor = self.source(size / max(side, 1e-6))
            x1, y1, x2, y2 = (int(v) for v in np.round(box * factor))
            height, width = source.shape[:2]
            cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
            if x2 <= x1 or y2 <= y1 or cx2 <= cx1 or cy2 <= cy1:
                continue
            region = source[cy1:cy2, cx1:cx2]
            if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
                padded = np.zeros((y2 - y1, x2 - x1, 3), dtype=np.uint8)
                padded[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1] = region
                region = padded
            out[i] = cv2.resize(region, (size, size), interpolation=cv2.INTER_LINEAR)
        return out


class MtcnnDetector(FaceDetector):
    """MTCNN: P-Net over an image pyramid, then R-Net and O-Net on the proposals (ONNX Runtime).

    ``min_face``: the smallest face the pyramid is made for, in pixels (cost grows with image
    pixels / min_face²). The pyramid's levels lie on one grid for every ``min_face`` (see
    :func:`pyramid_scales`), so ``min_face`` takes effect in steps of the pyramid's ``factor``
    (with 0.55: 40-72 px search from the same first level as the default 48, 22-39 px from the
    next finer one) and a smaller ``min_face`` never finds fewer faces.
    ``thresholds``: face-probability thresholds of P-Net, R-Net, O-Net; the last is the score a
    face needs (the score is O-Net's probability). ``factor``: the pyramid's step. ``retry``: when
    this finds no face, search once more with the reference MTCNN's denser settings (P-Net
    threshold 0.6, step 0.709), which costs ~1.5x but only on pictures without a face found.
    ``threads``: ONNX Runtime threads per call. ``angles``: in-plane turns (degrees,
    counter-clockwise) of the image searched besides the upright one, for faces tilted beyond what
    the nets learned (each costs about one more search; the ``recall`` preset, see
    :mod:`.presets`): a face found there gets a box of the same size around its centre turned
    back; a face found upright keeps its upright box (turned finds only add faces). Safe to call
    from several threads (ONNX Runtime sessions are; everything else is per call).

    The defaults are chosen by ``benchmarks/detector_choice.py`` (see benchmarks/README.md): the
    reference settings (P-Net 0.6, step 0.709) cost 19 / 44 CPU ms at 640x480 / 1280x720; P-Net
    0.8 with step 0.6 costs 14 / 27 ms and misses 0.5 % more of the LFPW crops, which the retry
    mostly wins back. Searching from 48 px instead of 40 with P-Net at 0.9 (the defaults since
    2026-12-02) cuts another ~30 % at 640x480 and ~50 % at 1280x720 and misses about as much:
    0 of 471 validation crops, 2 of 360 collage faces (as before; P-Net at 0.85: 1), 0.25 /
    0.03 % of all LFPW / Udacity crops (was 0 / 0: two hard LFPW faces that 40 px found by luck
    of the pyramid's scales). The pyramid's step 0.55 (was 0.6; also since 2026-12-02) saves
    another ~6 % (0.35 ms at 640x480) for two more missed LFPW crops (0.5 %; val and collages
    unchanged: 0 of 471, 2 of 360); 0.5 missed a validation face and a third collage face.
    """

    name = "mtcnn"

    def __init__(
        self,
        min_face: float = 48,
        thresholds: tuple[float, float, float] = (0.9, 0.7, 0.7),
        factor: float = 0.55,
        retry: bool = True,
        threads: int = 1,
        angles: tuple[float, ...] = (),
    ):
        if isinstance(min_face, bool) or not isinstance(min_face, (int, float)) or not 8 <= min_face <= 10000:
            raise ValueError(f"min_face must be a number of pixels from 8 to 10000, got {min_face!r}")
        thresholds = tuple(float(t) for t in thresholds)
        if len(thresholds) != 3 or not all(0.0 <= t < 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be three probabilities in [0, 1), got {thresholds!r}")
        if not 0.3 <= factor <= 0.95:
            raise ValueError(f"factor must be from 0.3 to 0.95, got {factor!r}")
        if int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
        angles = tuple(float(a) for a in angles)
        if not all(math.isfinite(a) and 0 < abs(a) <= 90 for a in angles):
            raise ValueError(f"angles must be turns of the image in degrees, 0 < |angle| <= 90, got {angles!r}")
        self.angles = angles
        self.min_face = float(min_face)
        self.thresholds = thresholds
        self.factor = float(factor)
        self.retry = bool(retry)
        self.threads = int(threads)
        weights = load_mtcnn_weights()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # P-Net sees a new input shape at every pyramid level: shape-keyed memory plans only cost
        opts.enable_mem_pattern = False
        opts.enable_cpu_mem_arena = False
        providers = ["CPUExecutionProvider"]
        self._pnet = ort.InferenceSession(pnet_graph(weights["pnet"]), opts, providers=providers)
        self._rnet = ort.InferenceSession(rnet_graph(weights["rnet"]), opts, providers=providers)
        self._onet = ort.InferenceSession(onet_graph(weights["onet"]), opts, providers=providers)

    def options(self) -> dict[str, Any]:
        options = {"min_face": self.min_face, "thresholds": list(self.thresholds), "factor": self.factor, "retry": self.retry}
        return {**options, "angles": list(self.angles)} if self.angles else options

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        boxes, scores, _ = self.detect_boxes(image_bgr)
        return by_score([Detection(b, s) for b, s in zip(boxes, scores)])

    def detect_boxes(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N, 4: x1, y1, x2, y2 on pixel edges), scores (N,) and 5 points (N, 5, 2: eyes,
        nose, mouth corners) of the faces in a BGR image, best first."""
        image = check_image(image_bgr)
        found = self._search(image)
        if not self.angles:
            return found
        upright_count = len(found[0])
        for angle in self.angles:
            found = tuple(np.concatenate(pair) for pair in zip(found, self._search_turned(image, angle)))
        boxes, scores, points = found
        # merged as O-Net's finds are, upright finds first: a face found upright keeps its upright
        # box (the kind the calibration was fitted on); the turned search only adds faces
        priority = scores + 2.0 * (np.arange(len(scores)) < upright_count)
        order = nms(boxes, priority, 0.7, "min")
        order = order[np.argsort(-scores[order], kind="stable")]
        return boxes[order], scores[order], points[order]

    def _search(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The cascade on the upright image, and the retry where it finds nothing."""
        pyramid = Halvings(image)
        found = self._cascade(pyramid, self.thresholds[0], self.factor)
        dense = (min(self.thresholds[0], DENSE[0]), max(self.factor, DENSE[1]))
        if self.retry and not len(found[0]) and dense != (self.thresholds[0], self.factor):
            found = self._cascade(pyramid, *dense)
        return found

    def _search_turned(self, image: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The cascade (no retry) on the image turned by ``angle`` degrees about its centre (same
        size, borders replicated), its finds mapped back: box centres and points turned back,
        box sizes kept (the box of the face as it lies, which the calibration expects)."""
        height, width = image.shape[:2]
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
        turned = cv2.warpAffine(image, turn, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        boxes, scores, points = self._cascade(Halvings(turned), self.thresholds[0], self.factor)
        back = cv2.invertAffineTransform(turn)
        centres = ((boxes[:, :2] + boxes[:, 2:]) / 2) @ back[:, :2].T + back[:, 2]
        half = (boxes[:, 2:] - boxes[:, :2]) / 2
        points = points @ back[:, :2].T + back[:, 2]
        return np.concatenate([centres - half, centres + half], axis=1), scores, points

    def _cascade(self, pyramid: Halvings, pnet_threshold: float, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The three stages with this P-Net threshold and pyramid step."""
        empty = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        boxes = self._proposals(pyramid, pnet_threshold, factor)
        if not len(boxes):
            return empty
        squares = square(boxes)
        reg, prob = self._rnet.run(None, {"image": pyramid.patches(squares, 24)})
        keep = prob[:, 1] > self.thresholds[1]
        boxes = regress(squares[keep], reg[keep])
        boxes = boxes[nms(boxes, prob[keep, 1], 0.7)]
        if not len(boxes):
            return empty
        squares = square(boxes)
        reg, points, prob = self._onet.run(None, {"image": pyramid.patches(squares, 48)})
        keep = prob[:, 1] > self.thresholds[2]
        squares, reg, points, scores = squares[keep], reg[keep], points[keep], prob[keep, 1]
        boxes = regress(squares, reg)
        side = (squares[:, 2:] - squares[:, :2])[:, None, :]
        # O-Net's 10 numbers are 5 x-coordinates, then 5 y-coordinates, in units of the square
        landmarks = squares[:, None, :2] + np.stack([points[:, :5], points[:, 5:]], axis=2) * side
        order = nms(boxes, scores, 0.7, "min")
        return boxes[order], scores[order].astype(np.float64), landmarks[order]

    def _proposals(self, pyramid: Halvings, threshold: float, factor: float) -> np.ndarray:
        """P-Net over the pyramid: candidate boxes (x1, y1, x2, y2) in image pixels, after NMS."""
        height, width = pyramid.levels[0].shape[:2]
        found = []
        for scale in pyramid_scales(height, width, self.min_face, factor):
            reg, prob = self._pnet.run(None, {"image": pyramid.resized(scale)[None]})
            ys, xs = np.nonzero(prob[0, 1] > threshold)
            if not len(ys):
                continue
            scores = prob[0, 1, ys, xs]
            # the window at output cell (y, x) covers [2x, 2x + 12) x [2y, 2y + 12) of the scaled image
            cells = np.stack([xs, ys, xs, ys], axis=1) * PNET_STRIDE + np.array([0, 0, PNET_CELL, PNET_CELL])
            boxes = cells / scale
            offsets = reg[0][:, ys, xs].T
            keep = nms(boxes, scores, 0.5)
            found.append(np.concatenate([boxes[keep], offsets[keep], scores[keep, None]], axis=1))
        if not found:
            return np.zeros((0, 4))
        allb = np.concatenate(found)
        keep = nms(allb[:, :4], allb[:, 8], 0.7)
        return regress(allb[keep, :4], allb[keep, 4:8])
