"""What defines a training run: :class:`TrainConfig` (torch-free, so ``asmnet train --help`` and
argument checks work before PyTorch is imported).

Each field's ``metadata["help"]`` is the help text of its ``asmnet train`` flag: the command line
is built from these fields (``--batch-size`` for ``batch_size``), so a default is written once,
here. The defaults are the from-scratch recipe of the shipped model (stage 1 in
``models/default/MODEL_CARD.md``: ASM-LOSS with an L1 point distance, a shape model keeping 99 %
of the variance, AdamW at 2e-3, 200 planned epochs at 128 px); the shipped model was then
fine-tuned from those weights with ``init`` (see the README).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from ..architectures import ARCHS, HEADS, LOSS_KINDS, POINT_LOSSES, arch_head_problem
from ..errors import AsmnetError
from ..geometry import CROP_SCALE
from .augment import AugmentConfig

# the largest training input side: see TrainConfig.validate
MAX_TRAIN_INPUT_SIZE = 512


def setting(default: Any, help: str, **flag: Any) -> Any:
    """A config field with a default and its command-line help (``flag``: extra argparse keywords
    such as ``choices`` or ``metavar``)."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in config.json and every checkpoint)."""

    data: list[str] = field(metadata={
        "help": "a 300W-layout folder (.pts beside images), a WFLW list or a .mat folder; repeatable",
        "metavar": "DIR"})
    out: str = field(metadata={"help": "run folder (checkpoints, metrics, card)", "metavar": "DIR"})
    points: int = setting(68, "landmarks per face (68: iBUG, 98: WFLW)", choices=(68, 98))
    input_size: int = setting(128, "side of the square network input in pixels")
    width: float = setting(1.0, "channel width multiplier of the network")
    arch: str = setting("asmnet", "asmnet, or the mnv2 baseline (full MobileNetV2)", choices=ARCHS)
    head: str = setting("pooled", "landmark head: pooled (linear on pooled features, the paper's) or grid "
                        "(scores and offsets per cell of the stride-16 map; asmnet arch only)", choices=HEADS)
    dropout: float = setting(0.3, "dropout before the heads")
    # slow BN running stats: with 0.1 val NME jumped +-0.5 % between epochs
    bn_momentum: float = setting(0.01, "BatchNorm running-statistics momentum")
    epochs: int = setting(200, "planned epochs (the learning-rate schedule spans them)")
    batch_size: int = setting(64, "global batch: with N processes each takes batch/N per step (must divide evenly)")
    lr: float = setting(2e-3, "peak AdamW learning rate (linear warm-up, then cosine decay to 1 %)")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    warmup_epochs: int = setting(2, "epochs of linear learning-rate warm-up")
    init: str | None = setting(
        None, "fine-tune: start from the weights and shape model of this checkpoint, model folder or "
        "shipped model (e.g. --init default --loss mse --lr 3e-4 --warmup-epochs 1 --ema 0.998)",
        metavar="MODEL")
    ema: float = setting(0.0, "decay of an exponential moving average of the weights (e.g. 0.999); 0 = off")
    loss: str = setting("asm", "asm: ASM-LOSS; mse: the same without the ASM term (baseline)", choices=LOSS_KINDS)
    point_loss: str = setting("l1", "distance of the landmark terms (wing: Feng et al. 2018, w = 10 / eps = 2 px "
                              "of a 256-px crop)", choices=POINT_LOSSES)
    variance: float = setting(0.99, "share of the shape variance the ASM keeps")
    shape_passes: int = setting(5, "augmented passes over the training shapes to fit the ASM")
    pose_weight: float = setting(1.0, "weight of the pose term")
    head_l2: float = setting(0.0, "L2 on the heads (the reference used 0.01)")
    cell_weight: float = setting(0.02, "grid head: weight of the cell term (cross-entropy of each point's cell)")
    teacher: list[str] = field(default_factory=list, metadata={
        "help": "self-distillation: these models (checkpoints, packages or shipped names, trained on this run's "
        "validation split), each with flip TTA and averaged, label every augmented crop and the student also "
        "learns their points; repeatable", "metavar": "MODEL"})
    teacher_weight: float = setting(1.0, "weight of the teacher term (with --teacher)")
    recrop: float = setting(0.0, "share of each batch cropped again around the network's own prediction (the "
                            "averaged weights' with --ema), as the second look crops a face: the border of a "
                            "ground-truth crop gives the face's extent away, a re-crop repeats the prediction's "
                            "mistakes; 0 = off", metavar="SHARE")
    crop_scale: float = setting(CROP_SCALE, "crop side / landmark-box side")
    # Training works in OpenCV's 0-based frame, so that a horizontal flip mirrors the true
    # positions; predictions get the origin added back (the files' convention).
    label_origin: float = setting(
        1.0, "pixel index of the first pixel's centre in the annotations (iBUG .pts: 1; 0-based: 0)")
    val_fraction: float = setting(0.12, "share of the groups held out for validation")
    # a small, varied set is not drowned by thousands of near-duplicate video frames
    oversample: dict[str, int] = field(default_factory=dict, metadata={
        "help": "draw the training faces of the data folder FOLDER N times per epoch; repeatable",
        "metavar": "FOLDER=N"})
    group_pattern: str | None = setting(
        None, "regex on the stem whose first group names a group kept on one side of the split "
        r"(video clips: '^(?:testcsv_)?([A-Za-z][A-Za-z_.'-]*_\d)\d$' for Udacity frames)", metavar="REGEX")
    keep_off_image: bool = setting(False, "train also on faces whose points lie off their image (by default such "
                                   "annotations are skipped with a line each)")
    split_seed: int = setting(0, "seed of the validation split")
    seed: int = setting(0, "seed of initialisation, sampling and augmentation")
    workers: int = setting(2, "DataLoader worker processes")
    device: str = setting("auto", "auto, cpu, cuda, cuda:1 ... (under DDP: cpu, or cuda:LOCAL_RANK)")
    sync_bn: bool = setting(True, "DDP: BatchNorm statistics over the global batch (--no-sync-bn: per process, faster)")
    # a partial --augment merges onto the defaults (cli.config_from_args); the tight crop jitter of the
    # accuracy issue's runs is --augment scale=0.06 --augment shift=0.04
    augment: dict[str, float] = field(default_factory=lambda: AugmentConfig().to_dict(), metadata={
        "help": "an augmentation setting KEY=X, repeatable; the rest keep their defaults (scale 0.12: crop side "
        "x U(1-s, 1+s); shift 0.08: centre + U(-s, s) x side; rotation 30 (degrees); rotation_prob 0.6; flip_prob "
        "0.5; color_prob 0.8; blur_prob 0.15; gray_prob 0.1; lowres_prob 0.1; occlusion_prob 0.15; wide_prob 0: "
        "the share of crops jittered by wide_scale 0.12 / wide_shift 0.08 instead of scale / shift)",
        "metavar": "KEY=X"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`AsmnetError` (one line naming the flag and the value) for any setting
        that cannot make a run, before anything is loaded: no run starts that would crash later,
        or could not be resumed or exported."""

        def bad(name: str, problem: str) -> AsmnetError:
            value = getattr(self, name)
            return AsmnetError(f"--{name.replace('_', '-')} {value!r}: {problem}")

        def whole(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(name, f"must be a whole number in {low}..{high}")

        def number(name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
            if not ok:
                span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
                raise bad(name, f"must be a finite number in {span}")

        def one_of(name: str) -> None:
            choices = next(f for f in fields(self) if f.name == name).metadata["choices"]  # the CLI's list
            if getattr(self, name) not in choices:
                raise bad(name, f"must be one of {', '.join(map(str, choices))}")

        if not isinstance(self.data, list) or not self.data or not all(isinstance(d, str) and d for d in self.data):
            raise bad("data", "give at least one data folder or list")
        if not isinstance(self.out, str) or not self.out:
            raise bad("out", "give a run folder")
        one_of("points")
        # 32: the checkpoint minimum (and the last stage's 1x1 map); 512: a face region is kept
        # in memory at ~2.4x the input side per face, 4.5 MB each at 512 px
        whole("input_size", 32, MAX_TRAIN_INPUT_SIZE)
        number("width", 0.0, 4.0, low_open=True)
        one_of("arch")
        one_of("head")
        if arch_head_problem(self.arch, self.head):  # names are checked above: only the pairing is left
            raise bad("head", f"{arch_head_problem(self.arch, self.head)} (--arch)")
        number("dropout", 0.0, 1.0, high_open=True)
        number("bn_momentum", 0.0, 1.0)
        whole("epochs", 1, 1_000_000)
        whole("batch_size", 2, 65_536)  # BatchNorm needs two values per channel at 32 px
        number("lr", 0.0, 10.0, low_open=True)
        number("weight_decay", 0.0, 10.0)
        whole("warmup_epochs", 0, 1_000_000)
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            raise bad("init", "give a checkpoint file")
        number("ema", 0.0, 1.0, high_open=True)
        one_of("loss")
        one_of("point_loss")
        number("variance", 0.0, 1.0, low_open=True)
        whole("shape_passes", 1, 1000)
        number("pose_weight", 0.0, 1e6)
        number("head_l2", 0.0, 1e6)
        number("cell_weight", 0.0, 1e6)
        if not isinstance(self.teacher, list) or not all(isinstance(t, str) and t for t in self.teacher):
            raise bad("teacher", "expected a list of model paths or names")
        number("teacher_weight", 0.0, 1e6)
        number("recrop", 0.0, 1.0)
        if self.recrop and self.teacher:
            raise bad("recrop", "cannot be combined with --teacher (the teachers read the crops before they are re-cut)")
        number("crop_scale", 0.5, 4.0)
        number("label_origin", -1e6, 1e6)
        number("val_fraction", 0.0, 1.0, high_open=True)
        if not isinstance(self.oversample, dict) or not all(
            isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000
            for k, v in self.oversample.items()
        ):
            raise bad("oversample", "expected FOLDER=N with a whole number N in 1..1000")
        if self.group_pattern is not None:
            try:
                re.compile(self.group_pattern)
            except (re.error, TypeError) as exc:
                raise bad("group_pattern", f"not a regular expression ({exc})") from None
        whole("split_seed", 0, 2**32 - 1)
        whole("seed", 0, 2**32 - 1)  # NumPy seeds samples with (seed, epoch, index): no negatives
        whole("workers", 0, 256)
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?", self.device):
            raise bad("device", "expected auto, cpu, cuda, cuda:N, mps or xpu")
        if not isinstance(self.augment, dict) or set(self.augment) - set(AugmentConfig.__dataclass_fields__):
            raise bad("augment", f"expected keys of AugmentConfig ({', '.join(AugmentConfig.__dataclass_fields__)})")
        for key, value in self.augment.items():
            high = 180.0 if key == "rotation" else 1.0
            open_end = key in ("scale", "shift", "wide_scale", "wide_shift")  # 1 could shrink a crop to nothing
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (is_number and 0.0 <= value and (value < high if open_end else value <= high)):
                raise bad("augment", f"{key} must be a number in [0, {high:g}{')' if open_end else ']'}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The config recorded in a checkpoint or config.json (unknown keys are ignored, missing
        ones take today's defaults)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
