"""What defines a region-refiner run: :class:`RefinerConfig` (torch-free, so ``asmnet refiner
--help`` and argument checks work before PyTorch is imported; :mod:`asmnet.training.refiner` trains)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..architectures import PATCH_HEADS
from ..errors import AsmnetError
from ..regions import KINDS_68
from .config import setting
from .split import ALL_DATA_PATTERN


@dataclass
class RefinerConfig:
    """Everything that defines a refiner run (recorded in OUT/refiner_config.json)."""

    data: list[str] = field(metadata={"help": "a 300W-layout folder; repeatable", "metavar": "DIR"})
    out: str = field(metadata={"help": "run folder (checkpoints, refiner/, validation)", "metavar": "DIR"})
    base: str = setting("default", "the landmark model whose predictions the refiner corrects", metavar="MODEL")
    after: str | None = setting(None, "a refiner folder this one follows (a cascade: its points are this stage's "
                                "starts, and OUT/refiner/ holds both stages)", metavar="DIR")
    kinds: list[str] = field(default_factory=lambda: [k.name for k in KINDS_68], metadata={
        "help": f"face-part kinds to refine ({', '.join(k.name for k in KINDS_68)}); repeatable; 'none': no part "
                "networks, only the shape regression", "metavar": "KIND"})
    epochs: int = setting(12, "epochs per kind")
    batch_size: int = setting(128, "patches per step")
    lr: float = setting(2e-3, "peak AdamW learning rate (one cycle)")
    width: int = setting(16, "channels of the first layer of each part network")
    head: str = setting("pooled", "how each part network reads its last feature map: pooled (averaged over the "
                        "patch) or spatial (every cell, flattened)", choices=PATCH_HEADS)
    jitter_shift: float = setting(0.04, "SD of a part's extra shift, in inter-ocular units")
    jitter_scale: float = setting(0.05, "SD of a part's extra log-scale")
    jitter_rotation: float = setting(4.0, "SD of a part's extra rotation in degrees")
    label_origin: float = setting(1.0, "first pixel's centre in the annotations (iBUG .pts: 1)")
    val_fraction: float = setting(0.12, "share of the groups held out (as asmnet train)")
    group_pattern: str | None = setting(ALL_DATA_PATTERN, "split groups (as asmnet train --group-pattern)",
                                        metavar="REGEX")
    split_seed: int = setting(0, "seed of the validation split")
    seed: int = setting(0, "seed of sampling and augmentation")
    select_kinds: bool = setting(True, "keep only the kinds that lower the validation NME (--no-select-kinds: "
                                 "export every kind, each with its best smallest face)")
    shape_regression: bool = setting(True, "fit a shape regression of every point after the part networks "
                                     "(kept when it lowers the validation NME; --no-shape-regression: none)")
    detector: str = setting("mtcnn", "detector that starts the validation faces (choice of min_iod); none: "
                            "their ground-truth boxes")
    ensemble_with: list[str] = field(default_factory=list, metadata={
        "help": "a finished refiner run (its <kind>.pt) whose part networks are averaged with this run's, kind by "
                "kind (an ensemble: one graph per kind, its members' mean); repeatable. A finished OUT with "
                "--resume trains nothing more and only builds the ensemble", "metavar": "DIR"})
    ensemble_kinds: list[str] = field(default_factory=list, metadata={
        "help": "with --ensemble-with: only these kinds are averaged (the others keep this run's network alone, "
                "e.g. to stay within a speed budget); repeatable; default: every kind", "metavar": "KIND"})
    remeasure_earlier: bool = setting(False, "with --after: the earlier stages were trained on another network "
                                      "than --base (e.g. the model's previous version): measure each again on "
                                      "--base's validation points, keeping what it recorded as its earlier base")

    def __post_init__(self) -> None:
        known = {k.name for k in KINDS_68}
        if self.kinds == ["none"]:
            self.kinds = []
        if any(k not in known for k in self.kinds):
            raise AsmnetError(f"--kinds {self.kinds!r}: each must be one of {', '.join(sorted(known))}, or just 'none'")
        if self.ensemble_kinds and not self.ensemble_with:
            raise AsmnetError("--ensemble-kinds needs --ensemble-with (the runs whose networks are averaged in)")
        if any(k not in self.kinds for k in self.ensemble_kinds):
            raise AsmnetError(f"--ensemble-kinds {self.ensemble_kinds!r}: each must be one of this run's --kinds "
                              f"({', '.join(self.kinds) or 'none'})")
        if self.remeasure_earlier and not self.after:
            raise AsmnetError("--remeasure-earlier needs --after (the earlier stages to measure again)")
        if not self.kinds and not self.shape_regression:
            raise AsmnetError("--kinds none with --no-shape-regression leaves nothing to train")
        for name, low, high in (("epochs", 1, 10_000), ("batch_size", 1, 65_536), ("width", 4, 256)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise AsmnetError(f"--{name.replace('_', '-')} {value!r}: must be a whole number in {low}..{high}")
        for name in ("lr", "jitter_shift", "jitter_scale", "jitter_rotation", "val_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise AsmnetError(f"--{name.replace('_', '-')} {value!r}: must be a finite number >= 0")
