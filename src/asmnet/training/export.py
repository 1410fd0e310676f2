"""Export a checkpoint to a model package: ONNX graph + model.json (+ slim weights.pt)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError
from ..fileio import write_atomic, write_json_atomic
from ..nn.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ..runtime import ModelInfo, OnnxLandmarkModel

OPSET = 17
MAX_ABS_DIFF = 1e-4


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and checked."""

    onnx: Path  # the ONNX graph
    json: Path  # its model.json (or NAME.json beside NAME.onnx)
    weights: Path | None  # weights.pt of a package folder; None for a lone .onnx file
    onnx_bytes: int  # size of the ONNX file
    denormals_flushed: int  # subnormal weights set to zero before the export
    max_abs_diff: float  # largest ONNX Runtime vs PyTorch output difference on random pixels


def flush_denormals(model: torch.nn.Module) -> int:
    """Zero every subnormal float in the weights and buffers; returns how many were zeroed.

    Weights that decay towards zero end up subnormal, and this kind of CPU computes with them up
    to 20x slower; zeroing them changes no output measurably.
    """
    tiny = torch.finfo(torch.float32).tiny
    flushed = 0
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                mask = (t != 0) & (t.abs() < tiny)
                flushed += int(mask.sum())
                t[mask] = 0.0
    return flushed


def onnx_bytes(model: torch.nn.Module, input_size: int) -> bytes:
    """The model as an ONNX graph with a dynamic batch axis."""
    buf = io.BytesIO()
    dummy = torch.zeros(1, 3, input_size, input_size)
    torch.onnx.export(
        model, (dummy,), buf, input_names=["image"], output_names=["landmarks", "pose"],
        dynamic_axes={"image": {0: "batch"}, "landmarks": {0: "batch"}, "pose": {0: "batch"}},
        opset_version=OPSET, dynamo=False,
    )
    return buf.getvalue()


def check_onnx(onnx_path: Path, info: ModelInfo, model: torch.nn.Module, batch: int = 4) -> float:
    """Max abs difference between ONNX Runtime and PyTorch on random pixels; raises if too large."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(batch, 3, info.input_size, info.input_size)).astype(np.float32)
    with torch.inference_mode():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    session = OnnxLandmarkModel(onnx_path, info, threads=1)
    got = session._forward(x)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    if diff > MAX_ABS_DIFF:
        raise ModelError(onnx_path, f"ONNX output differs from PyTorch by {diff:.2e} (limit {MAX_ABS_DIFF:.0e})")
    return diff


def export_model(
    checkpoint: str | Path, out: str | Path, name: str | None = None, extra: dict | None = None
) -> ExportResult:
    """Write ``out/`` (model.onnx, model.json, weights.pt) or ``out.onnx`` + ``out.json``.

    ``extra`` is merged into model.json (calibrations, quality threshold, card). Returns an
    :class:`ExportResult`. Raises :class:`ModelError` when the checkpoint cannot be used or the
    ONNX graph's outputs differ from PyTorch's by more than ``MAX_ABS_DIFF``.
    """
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    flushed = flush_denormals(model)
    info = ModelInfo.from_checkpoint(ckpt, checkpoint)
    out = Path(out)
    if out.suffix == ".onnx":
        onnx_path, json_path, weights_path = out, out.with_suffix(".json"), None
    else:
        onnx_path, json_path, weights_path = out / "model.onnx", out / "model.json", out / "weights.pt"
    info.name = name or (out.stem if out.suffix == ".onnx" else out.name)
    data = onnx_bytes(model, info.input_size)
    write_atomic(onnx_path, lambda p: p.write_bytes(data))
    diff = check_onnx(onnx_path, info, model)
    meta = info.to_json()
    for key, value in (extra or {}).items():
        meta[key] = value
    meta["card"] = {**info.card, **meta.get("card", {}), "denormals_flushed": flushed}
    write_json_atomic(json_path, meta)
    if weights_path is not None:
        slim = {k: ckpt[k] for k in ("model_config", "input_size", "crop_scale", "label_origin", "markup", "shape_model",
                                     "epoch", "best_nme", "train_config", "git_commit", "package_version") if k in ckpt}
        slim["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_checkpoint(weights_path, slim)
    return ExportResult(onnx=onnx_path, json=json_path, weights=weights_path, onnx_bytes=len(data),
                        denormals_flushed=flushed, max_abs_diff=diff)
