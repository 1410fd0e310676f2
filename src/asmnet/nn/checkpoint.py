"""Checkpoints (torch): written atomically, loaded safely (weights_only) and validated before use.

They live beside the network because inference (the PyTorch backend), export and training all
read them; nothing here depends on the training code."""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError, first_line
from ..fileio import write_atomic
from ..package import ModelInfo
from .model import build_model

CHECKPOINT_FORMAT = "asmnet-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "model_config", "input_size", "crop_scale", "shape_model", "state_dict")


def plain(value: Any) -> Any:
    """NumPy scalars and arrays as Python numbers and lists, so weights_only loading accepts them."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file, fsync, rename); OutputError when it cannot
    be written (the previous file is then unchanged)."""
    data = plain({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **checkpoint})

    def save(tmp: Path) -> None:
        try:
            torch.save(data, tmp)
        except RuntimeError as exc:
            # The data is plain tensors and numbers, so torch.save fails only where the file does:
            # its zip writer reports a full disk (or a file size limit) as "file write failed" or
            # "unexpected pos N vs M", never as an OSError
            raise OSError(errno.ENOSPC, f"PyTorch could not write the file; is the disk full? ({first_line(exc, 80)})"
                          ) from None

    write_atomic(path, save)


def without_training_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint without what only resuming needs (optimiser, scheduler, the raw weights an
    EMA averages): what ``best.pt`` holds, a third of ``last.pt``'s size."""
    return {**checkpoint, "optimizer": {}, "scheduler": {}, "train_state_dict": None}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint file, or the ``weights.pt`` of a model package folder.

    Returns the checkpoint dict (tensors on ``map_location``); raises :class:`ModelError` (one
    line) when the file is missing, corrupt, of another format or inconsistent.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "weights.pt").is_file():
            raise ModelError(path, "this model folder has no weights.pt (PyTorch weights)")
        path = path / "weights.pt"
    if not path.is_file():
        raise ModelError(path, "no such checkpoint file")
    try:
        with zipfile.ZipFile(path) as archive:  # torch.load does not check the CRCs: flipped bytes load silently
            bad = archive.testzip()
        if bad is not None:
            raise ModelError(path, f"corrupt checkpoint (checksum error in {bad})")
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except ModelError:
        raise
    except Exception as exc:  # torch.load raises many types (KeyError, RuntimeError, pickle errors ...)
        raise ModelError(path, f"corrupt or truncated checkpoint ({first_line(exc).split('. ')[0]})") from None
    validate_checkpoint(ckpt, path)
    return ckpt


def validate_checkpoint(ckpt: object, path: str | Path | None = None) -> None:
    """ModelError unless the checkpoint is of this format and version, every number it carries
    is finite and in range (:meth:`asmnet.package.ModelInfo.from_checkpoint`), and its weights
    have exactly the names and shapes of the network its ``model_config`` describes (compared on
    a network without memory, so a config that would need gigabytes allocates nothing) and are
    finite."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(path, "not an asmnet checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ModelError(path, f"checkpoint format version {ckpt.get('version')!r}; this asmnet reads {CHECKPOINT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ModelError(path, f"checkpoint lacks {', '.join(missing)}")
    for key in ("model_config", "state_dict", "shape_model"):
        if not isinstance(ckpt[key], dict):
            raise ModelError(path, f"checkpoint {key} is not a mapping")
    info = ModelInfo.from_checkpoint(ckpt, path)
    points = ckpt["model_config"].get("num_points")
    if info.shape_model.n_points != points:
        raise ModelError(path, f"shape model has {info.shape_model.n_points} points, the network {points}")
    if ckpt["model_config"].get("head", "pooled") == "grid":  # N scores and N (x, y) offsets per cell
        head, outputs, ndim = ckpt["state_dict"].get("grid_head.out.weight"), 3 * points, 4
    else:
        head, outputs, ndim = ckpt["state_dict"].get("landmark_head.weight"), 2 * points, 2
    if not isinstance(head, torch.Tensor) or head.ndim != ndim or head.shape[0] != outputs:
        raise ModelError(path, f"landmark head does not output {outputs} values")
    _check_weight_shapes(ckpt, path)
    bad = [k for k, v in ckpt["state_dict"].items()
           if not isinstance(v, torch.Tensor) or (v.is_floating_point() and not bool(torch.isfinite(v).all()))]
    if bad:
        raise ModelError(path, f"weights hold NaN, infinite or non-tensor values ({len(bad)} of "
                         f"{len(ckpt['state_dict'])} tensors, the first {bad[0]!r}): a diverged or corrupt run")


def _check_weight_shapes(ckpt: dict[str, Any], path: str | Path | None) -> None:
    """ModelError unless the state dict has exactly the tensors (names and shapes) of the network
    its model_config describes; that network is built on the meta device, which allocates nothing."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(ckpt["model_config"]).state_dict().items()}
    state = ckpt["state_dict"]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and (not isinstance(state[k], torch.Tensor)
                                                     or tuple(state[k].shape) != expected[k])]
    if missing or unexpected or wrong:
        first = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}" if unexpected else
                 f"{wrong[0]!r} is {tuple(getattr(state[wrong[0]], 'shape', ()))}, the config needs {expected[wrong[0]]}")
        raise ModelError(path, f"weights do not fit the model config {ckpt['model_config']} ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, {len(wrong)} of another shape; {first})")


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path | None = None) -> torch.nn.Module:
    """Rebuild the network of a validated checkpoint, in eval mode."""
    model = build_model(ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ModelError(path, f"weights do not fit the model config ({first_line(exc)})") from None
    return model.eval()
