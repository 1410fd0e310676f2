"""Self-distillation (``asmnet train --teacher MODEL``): models of our own, each with flip
test-time augmentation and averaged together, label every augmented training crop, and the
student learns those points beside the annotations (the loss's teacher term).

Teachers run through the inference runtime (ONNX Runtime when the package has an ONNX file:
an INT8 teacher costs about a millisecond per crop on one CPU thread), on exactly the crops the
student sees, so they also teach on rotations, blur and occlusions the annotations never showed.
A teacher that trained on some of this run's validation faces would make the validation number
lie: its recorded split settings must equal the run's.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import AsmnetError, ModelError
from ..fileio import read_small_json
from ..inference import predict_crops
from ..runtime import LandmarkModel, load_model, resolve_model
from .config import TrainConfig

SPLIT_SETTINGS = ("val_fraction", "group_pattern", "split_seed")


def recorded_split(model: str) -> dict | None:
    """The validation-split settings a model was trained with (``val_fraction``,
    ``group_pattern``, ``split_seed``) as its checkpoint or model card records them; None when
    it records none."""
    path = resolve_model(model)
    if path.suffix == ".pt":
        from ..nn.checkpoint import load_checkpoint

        config = load_checkpoint(path).get("train_config") or {}
        return {k: config[k] for k in SPLIT_SETTINGS} if all(k in config for k in SPLIT_SETTINGS) else None
    meta = path / "model.json" if path.is_dir() else path.with_suffix(".json")
    try:
        card = read_small_json(meta, "model description").get("card", {})  # type: ignore[union-attr]
    except (AsmnetError, AttributeError):
        return None
    config = card.get("train_config") or {}
    if all(k in config for k in SPLIT_SETTINGS):
        return {k: config[k] for k in SPLIT_SETTINGS}
    split = (card.get("training") or {}).get("split") or {}  # the shipped models' cards
    if all(k in split for k in ("fraction", "group_pattern", "split_seed")):
        return {"val_fraction": split["fraction"], "group_pattern": split["group_pattern"],
                "split_seed": split["split_seed"]}
    return None


class Teacher:
    """An ensemble of landmark models with flip TTA; calling it on a batch of training crops
    returns their mean points in network units."""

    def __init__(self, models: list[LandmarkModel]):
        self.models = models

    @classmethod
    def load(cls, cfg: TrainConfig) -> tuple[Teacher, list[str]]:
        """The teachers ``cfg.teacher`` names, checked against the run; also the notes to log
        (teachers whose split could not be checked). Raises :class:`AsmnetError` (one line) for a
        teacher with another input size or markup, or trained on another validation split."""
        models, notes = [], []
        mine = {k: getattr(cfg, k) for k in SPLIT_SETTINGS}
        for name in cfg.teacher:
            try:
                model = load_model(name)
            except ModelError as exc:
                raise AsmnetError(f"--teacher {name}: {exc.problem}") from None
            info = model.info
            if info.input_size != cfg.input_size or info.markup.n_points != cfg.points:
                raise AsmnetError(f"--teacher {name}: it takes {info.input_size} px crops with "
                                  f"{info.markup.n_points} points, this run {cfg.input_size} px with {cfg.points}")
            theirs = recorded_split(name)
            if theirs is None:
                notes.append(f"--teacher {name}: it records no validation split; make sure it never trained on "
                             "this run's validation faces")
            elif theirs != mine:
                differ = ", ".join(f"{k} {theirs[k]!r} (this run {mine[k]!r})" for k in SPLIT_SETTINGS
                                   if theirs[k] != mine[k])
                raise AsmnetError(f"--teacher {name}: it was trained with another validation split ({differ}), "
                                  "so it may have learned this run's validation faces")
            models.append(model)
        return cls(models), notes

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        """Mean flip-averaged points ``(B, 2N)`` (float32, CPU) of uint8 NCHW RGB crops."""
        rgb = np.ascontiguousarray(crops.permute(0, 2, 3, 1).cpu().numpy())
        units = np.mean([predict_crops(m, rgb, batch_size=len(rgb), flip_tta=True)[0] for m in self.models], axis=0)
        return torch.from_numpy(units.reshape(len(rgb), -1).astype(np.float32))
