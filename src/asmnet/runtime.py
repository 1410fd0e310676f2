"""Run a landmark model on face crops: one interface, two backends (ONNX Runtime, PyTorch).

A *model package* is a folder with ``model.json`` (what the network expects and returns, its
shape model, detector box calibrations and model card), ``model.onnx`` (torch-free inference)
and optionally ``weights.pt`` (a checkpoint for the PyTorch backend and fine-tuning). The ONNX
graph takes float32 NCHW RGB pixels 0..255 (normalisation is inside the graph) and returns
landmarks (B, 2N) in normalised crop units and pose (B, 3) in degrees; a graph may also return
``error`` (B, 1), the error head's estimate of ln(NME %) of its own landmarks (see
:mod:`asmnet.quality`; model.json's ``quality_model`` then says how it makes the quality score).

:mod:`asmnet.package` reads and checks ``model.json`` (:class:`ModelInfo`); this module loads
the package's network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ModelError, first_line
from .package import ERROR_OUTPUT, ModelInfo, read_model_json

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "default"  # the shipped model FaceAligner() and every command load by default
DEFAULT_MODEL_DIR = MODELS_DIR / DEFAULT_MODEL
BACKENDS = ("auto", "onnx", "torch")


class LandmarkModel:
    """A loaded model: ``run(crops)`` maps RGB uint8 crops (B, S, S, 3) to units and pose."""

    info: ModelInfo
    backend: str
    has_error: bool = False  # the network also returns the error head's output

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (B, N, 2) in normalised crop units and pose (B, 3) in degrees (:meth:`predict`
        without the error head)."""
        points, pose, _ = self.predict(crops)
        return points, pose

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Landmarks (B, N, 2) in normalised crop units, pose (B, 3) in degrees and the error
        head's estimate of ln(NME %) (B,) (None when the network has no error head).

        Raises :class:`ModelError` when the network outputs NaN or infinite values: finite pixels
        never give them, so the weights are broken (every caller checks here, once).
        """
        batch = np.ascontiguousarray(np.asarray(crops, dtype=np.float32).transpose(0, 3, 1, 2))
        points, pose, *rest = self._forward(batch)
        error = rest[0] if rest else None
        if not (np.isfinite(points).all() and np.isfinite(pose).all()
                and (error is None or np.isfinite(error).all())):
            raise ModelError(None, f"model {self.info.name!r} predicts NaN or infinite values (corrupt weights?)")
        return (points.reshape(len(batch), -1, 2).astype(np.float64), pose.astype(np.float64),
                None if error is None else error.reshape(len(batch)).astype(np.float64))

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """The graph's outputs: landmarks (B, 2N), pose (B, 3) and, with an error head, error (B, 1)."""
        raise NotImplementedError


class OnnxLandmarkModel(LandmarkModel):
    """ONNX Runtime backend (no torch)."""

    backend = "onnx"

    def __init__(self, onnx_path: str | Path, info: ModelInfo, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(onnx_path, "onnxruntime is not installed (pip install onnxruntime)") from None
        self.info, self.path = info, Path(onnx_path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session_options = opts
        self.set_providers(["CPUExecutionProvider"])

    def set_providers(self, providers: list[str]) -> None:
        """(Re)create the session on these ONNX Runtime execution providers, in order of preference
        (e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]``); ModelError if it cannot load."""
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(self.path), self._session_options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(self.path, f"cannot load ONNX model ({first_line(exc)})") from None
        self._check_io()

    def _check_io(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        size, n = self.info.input_size, self.info.markup.n_points
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, size, size]:
            raise ModelError(self.path, f"ONNX input {[i.shape for i in inputs]} is not [batch, 3, {size}, {size}]")
        if (len(outputs) not in (2, 3) or outputs[0].shape[-1] != 2 * n or outputs[1].shape[-1] != 3
                or (len(outputs) == 3 and (outputs[2].name != ERROR_OUTPUT or outputs[2].shape[-1] != 1))):
            raise ModelError(self.path, f"ONNX outputs {[(o.name, o.shape) for o in outputs]} are not [batch, {2 * n}] "
                             f"and [batch, 3] (and optionally {ERROR_OUTPUT!r} [batch, 1])")
        self.has_error = len(outputs) == 3
        if self.info.quality_model is not None and not self.has_error:
            raise ModelError(self.path, f"model.json has a quality_model but the graph has no {ERROR_OUTPUT!r} output "
                             "(the error head it scores with)")
        self.input_name = inputs[0].name

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(None, {self.input_name: batch}))


class TorchLandmarkModel(LandmarkModel):
    """PyTorch backend (needs ``pip install asmnet[train]``). The checkpoint has no error head
    (it is added to the exported graph), so quality falls back to the scores without it."""

    backend = "torch"

    def __init__(self, checkpoint_path: str | Path, info: ModelInfo | None = None, threads: int | None = None):
        try:
            import torch
        except ImportError:
            raise ModelError(checkpoint_path, "the torch backend needs PyTorch (pip install asmnet[train])") from None
        from .nn.checkpoint import load_checkpoint, model_from_checkpoint

        ckpt = load_checkpoint(checkpoint_path)
        self.info = info or ModelInfo.from_checkpoint(ckpt, checkpoint_path)
        self.model = model_from_checkpoint(ckpt, checkpoint_path)
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.inference_mode():
            points, pose = self.model(self._torch.from_numpy(batch))
        return points.numpy(), pose.numpy()


def shipped_models() -> list[str]:
    """Names of the model packages shipped inside asmnet (``default`` first)."""
    names = sorted(p.parent.name for p in MODELS_DIR.glob("*/model.json"))
    return sorted(names, key=lambda n: n != DEFAULT_MODEL)


def resolve_model(model: str | Path | None) -> Path:
    """The path of a model given by shipped name, path, or None (the default model).

    A path that exists wins over a shipped name; anything else is looked up among
    :func:`shipped_models`. Raises ModelError naming the shipped models when neither matches."""
    if model is None:
        return DEFAULT_MODEL_DIR
    path = Path(model)
    if path.exists():
        return path
    if isinstance(model, str) and model in shipped_models():
        return MODELS_DIR / model
    raise ModelError(path, "no such model file or folder, nor a shipped model "
                     f"({', '.join(shipped_models()) or 'none installed'})")


def load_model(path: str | Path | None = None, backend: str = "auto", threads: int | None = None) -> LandmarkModel:
    """Load a shipped model by name (``"default"``, ``"default-fp32"``, ``"paper224"``), a model
    package folder, an ``.onnx`` file (with its ``.json``) or a ``.pt`` checkpoint.

    ``path=None`` loads the default model shipped in the package. ``backend="auto"`` prefers ONNX
    Runtime and falls back to PyTorch when the package has no ONNX file. Raises ModelError for a
    missing or unreadable model, ValueError for an unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = resolve_model(path)
    if path.is_dir():
        info = read_model_json(path / "model.json")
        onnx_file, weights = path / "model.onnx", path / "weights.pt"
        if backend == "torch" or (backend == "auto" and not onnx_file.exists() and weights.exists()):
            return TorchLandmarkModel(weights, info, threads)
        return OnnxLandmarkModel(onnx_file, info, threads)
    if path.suffix == ".onnx":
        if backend == "torch":
            raise ModelError(path, "an .onnx file runs with the onnx backend only")
        for meta in (path.with_suffix(".json"), path.parent / "model.json"):
            if meta.exists():
                return OnnxLandmarkModel(path, read_model_json(meta), threads)
        raise ModelError(path, f"no {path.with_suffix('.json').name} or model.json beside the ONNX file")
    if backend == "onnx":
        raise ModelError(path, "a checkpoint runs with the torch backend; export it to ONNX first (asmnet export)")
    return TorchLandmarkModel(path, None, threads)
