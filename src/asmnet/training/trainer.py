"""The training loop of ``asmnet train``: direct, in the style of PFLD's and PIPNet's loops.

Everything a run needs to continue is in ``last.pt`` (model, optimiser, scheduler, RNG states,
epoch, shape model, history), written atomically at the end of every epoch. A resumed run repeats
the interrupted epoch from its start with the same samples, so it ends where an uninterrupted
run would.

Data-parallel training (``torchrun -m asmnet train`` or ``asmnet train --nproc N``) runs this same
loop in every process; see :mod:`asmnet.training.distributed` and docs/distributed.md. ``batch_size``
is the global batch: each of the W ranks takes ``batch_size / W`` of every step's samples, so the
steps, the schedule and (with synchronised BatchNorm) the maths are those of one process.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import __version__
from ..errors import AsmnetError, DataNote, ModelError, OutputError, first_line
from ..fileio import check_writable_folder, write_json_atomic, write_text_atomic
from ..formats import key_folder, load_many
from ..markup import markup_for
from ..metrics import failure_rate, pose_mae
from ..metrics import nme as nme_percent
from ..nn import build_model, count_parameters
from ..nn.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint, without_training_state
from ..nn.losses import ASMLoss
from ..runtime import resolve_model
from ..shape_model import ShapeModel
from . import distributed
from .augment import AugmentConfig, augmented_shapes, make_sample
from .config import TrainConfig
from .data import EpochSampler, FaceDataset, FaceRegion, load_regions
from .distill import Teacher
from .distributed import DistContext
from .recrop import recrop_batch, recrop_tensors
from .split import split_keys

# what a run writes into its folder (write_atomic's temporaries are ".NAME.*.tmp" beside them)
RUN_CHECKPOINTS = ("last.pt", "best.pt")
RUN_FILES = (*RUN_CHECKPOINTS, "metrics.jsonl", "model_card.json", "curves.png", "config.json", "split.json")


def log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def check_run_folder(out: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """OutputError when ``out`` holds a run (its last.pt or best.pt) that a new run would replace:
    only ``resume`` (from its last.pt) or ``overwrite`` may use such a folder."""
    out = Path(out)
    held = [name for name in RUN_CHECKPOINTS if (out / name).exists()]
    if overwrite or not held or (resume and "last.pt" in held):
        return
    if resume:
        raise OutputError(out, "has best.pt but no last.pt to resume from: --overwrite replaces that run "
                          "(or choose another --out)")
    raise OutputError(out, f"holds a run ({', '.join(held)}): --resume continues it, --overwrite replaces it "
                      "(or choose another --out)")


def clear_run_folder(out: Path, overwrite: bool) -> None:
    """Remove the half-written temporaries of a killed run and, with ``overwrite``, the files of
    the run the folder held. Only the run's own files: the folder may hold anything else."""
    for name in RUN_FILES:
        for stale in out.glob(f".{glob.escape(name)}.*.tmp"):  # never renamed into place
            stale.unlink(missing_ok=True)
        if overwrite:
            (out / name).unlink(missing_ok=True)


def git_commit() -> str:
    """The commit of the source tree the package runs from ("+dirty" if modified), or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """The device of ``--device NAME``; AsmnetError when it is not on this machine."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise AsmnetError(f"--device {name}: " + ("CUDA is not available on this machine" if not torch.cuda.is_available()
                                                  else f"this machine has {torch.cuda.device_count()} CUDA devices"))
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AsmnetError(f"--device {name}: MPS is not available on this machine")
    if device.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise AsmnetError(f"--device {name}: XPU is not available on this machine")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    return device


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of the peak learning rate."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


def fit_shape_model(train: list[FaceRegion], cfg: TrainConfig) -> ShapeModel:
    """PCA of the training targets as the network sees them (augmented geometry, several passes)."""
    markup = markup_for(cfg.points)
    aug = AugmentConfig(**cfg.augment)
    shapes = augmented_shapes([r.points for r in train], cfg.input_size, markup, aug,
                              cfg.shape_passes, cfg.seed, cfg.crop_scale)
    notes = {"passes": cfg.shape_passes, "seed": cfg.seed, "augmented": True, "units": "normalised crop"}
    return ShapeModel.fit(shapes, cfg.variance, notes)


def validation_tensors(val: list[FaceRegion], cfg: TrainConfig) -> tuple[torch.Tensor, ...]:
    """Validation crops from the tight ground-truth box, no jitter: the standard protocol."""
    markup, none = markup_for(cfg.points), AugmentConfig.none()
    crops, targets, poses = [], [], []
    for r in val:
        crop, t, p = make_sample(r.image, r.points, r.pose, cfg.input_size, markup,
                                 np.random.default_rng(0), none, cfg.crop_scale)
        crops.append(crop.transpose(2, 0, 1))
        targets.append(t.reshape(-1))
        poses.append(p)
    return (torch.from_numpy(np.stack(crops)), torch.from_numpy(np.stack(targets).astype(np.float32)),
            torch.from_numpy(np.stack(poses).astype(np.float32)))


@torch.no_grad()
def predict_tensors(model: torch.nn.Module, crops: torch.Tensor, device: torch.device, batch: int = 256):
    model.eval()
    pts, poses = [], []
    for i in range(0, len(crops), batch):
        p, q = model(crops[i : i + batch].to(device).float())
        pts.append(p.float().cpu())
        poses.append(q.float().cpu())
    return torch.cat(pts).numpy(), torch.cat(poses).numpy()


def validate(model, val_data, val_keys: list[str], cfg: TrainConfig, device,
             val_regions: list[FaceRegion] | None = None) -> dict:
    """Validation NME (percent, inter-ocular) overall and per data folder, and pose MAE; with
    ``val_regions`` (the faces of ``val_data``) also ``val_nme_recrop`` (:func:`recrop_tensors`)."""
    pred, pred_pose = predict_tensors(model, val_data[0], device)
    out = validation_metrics(pred, pred_pose, val_data, val_keys, cfg)
    if val_regions is not None:
        crops, targets = recrop_tensors(val_regions, pred, cfg)
        out.update(recrop_metrics(predict_tensors(model, crops, device)[0], targets, val_keys, cfg))
    return out


def validate_sharded(model, val_data, val_keys: list[str], cfg: TrainConfig, ctx: DistContext,
                     val_regions: list[FaceRegion] | None = None) -> dict:
    """:func:`validate` with each rank predicting its own slice of the faces; the predictions are
    gathered in order, so every rank gets the numbers of a single-process validation."""
    lo, hi = distributed.shard_range(len(val_data[0]), ctx)

    def predict(crops: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if hi > lo:
            pred, pose = (torch.from_numpy(a) for a in predict_tensors(model, crops[lo:hi], ctx.device))
        else:  # more ranks than faces
            pred, pose = torch.zeros((0, 2 * cfg.points)), torch.zeros((0, 3))
        return (distributed.gather_rows(ctx, pred, len(crops)).numpy(),
                distributed.gather_rows(ctx, pose, len(crops)).numpy())

    pred, pred_pose = predict(val_data[0])
    out = validation_metrics(pred, pred_pose, val_data, val_keys, cfg)
    if val_regions is not None:
        crops, targets = recrop_tensors(val_regions, pred, cfg)
        out.update(recrop_metrics(predict(crops)[0], targets, val_keys, cfg))
    return out


def validation_metrics(pred: np.ndarray, pred_pose: np.ndarray, val_data, val_keys: list[str], cfg: TrainConfig) -> dict:
    """The numbers of :func:`validate` from predictions ``(F, 2N)`` and poses ``(F, 3)``."""
    _, targets, poses = val_data
    nmes = _nmes(pred, targets, cfg)
    out = {
        "val_nme": float(nmes.mean()),
        "val_nme_median": float(np.median(nmes)),
        "val_fr_0.08": failure_rate(nmes, 8.0),
        "val_fr_0.10": failure_rate(nmes, 10.0),
        "val_pose_mae": pose_mae(pred_pose, poses.numpy()),
    }
    out["val_nme_per_folder"] = _per_folder(nmes, val_keys)
    return out


def recrop_metrics(pred: np.ndarray, targets: torch.Tensor, val_keys: list[str], cfg: TrainConfig) -> dict:
    """``val_nme_recrop`` (mean NME %) and ``val_nme_recrop_per_folder`` on :func:`recrop_tensors`' crops."""
    nmes = _nmes(pred, targets, cfg)
    return {"val_nme_recrop": float(nmes.mean()), "val_nme_recrop_per_folder": _per_folder(nmes, val_keys)}


def _nmes(pred: np.ndarray, targets: torch.Tensor, cfg: TrainConfig) -> np.ndarray:
    n = cfg.points
    return nme_percent(pred.reshape(-1, n, 2), targets.numpy().reshape(-1, n, 2), markup_for(n))


def _per_folder(nmes: np.ndarray, val_keys: list[str]) -> dict[str, float]:
    folders = np.array([key_folder(k) for k in val_keys])
    return {str(f): float(nmes[folders == f].mean()) for f in sorted(set(folders))}


def plot_curves(history: list[dict], path: Path) -> None:
    """Train loss and validation NME per epoch, into one PNG (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..fileio import write_atomic

    ep = [h["epoch"] + 1 for h in history]
    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ep, [h["train"]["total"] for h in history], label="total")
    ax1.plot(ep, [h["train"]["points"] for h in history], label="points")
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_title("train loss")
    ax1.legend()
    ax2.plot(ep, [h["val_nme"] for h in history], label="all")
    for folder in history[-1]["val_nme_per_folder"]:
        ax2.plot(ep, [h["val_nme_per_folder"].get(folder, float("nan")) for h in history], label=folder)
    if "val_nme_recrop" in history[-1]:  # crops from the network's own points (recrop_tensors)
        ax2.plot(ep, [h.get("val_nme_recrop", float("nan")) for h in history], "k--", label="all, re-crop")
    ax2.set_xlabel("epoch")
    ax2.set_title("validation NME (%)")
    ax2.legend()
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=90))


def load_init(cfg: TrainConfig) -> dict:
    """The checkpoint ``cfg.init`` names (a .pt file, a model folder or a shipped model's name),
    checked against the run's network; :class:`AsmnetError` in one line when they differ."""
    ckpt = load_checkpoint(resolve_model(cfg.init))
    theirs = ckpt["model_config"]
    for key, mine in (("num_points", cfg.points), ("arch", cfg.arch), ("width", cfg.width)):
        if theirs.get(key, mine) != mine:
            raise AsmnetError(f"--init {cfg.init}: its network has {key} {theirs[key]!r}, this run {mine!r} "
                              "(give the same --points, --arch and --width)")
    return ckpt


class Run:
    """One training run: its folder, data, model and state. ``Run(cfg).fit()`` trains it.

    With a :class:`DistContext` of several ranks (made by :func:`distributed.setup`), every rank
    builds the same run, trains its share of each global batch under DistributedDataParallel and
    validates its share of the faces; only rank 0 logs and writes the run folder.
    """

    def __init__(self, cfg: TrainConfig, resume: bool = False, dist: DistContext | None = None,
                 overwrite: bool = False):
        self.dist = dist or distributed.SINGLE
        self.out = Path(cfg.out)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        check_run_folder(self.out, resume, overwrite)  # before anything in it is read or replaced
        # every rank reads last.pt itself, onto the CPU (load_checkpoint's map_location)
        self.ckpt = load_checkpoint(self.last_path) if resume and self.last_path.exists() else None
        self._check_ranks_agree_on_start()
        if resume and self.ckpt is None:
            self._log(f"{self.last_path}: no checkpoint to resume from; starting a new run")
        if self.ckpt is not None:
            try:
                saved = TrainConfig.from_dict(self.ckpt["train_config"])
            except (AsmnetError, KeyError, TypeError) as exc:
                raise ModelError(self.last_path, f"its training settings cannot be used ({exc})") from None
            if cfg.epochs != saved.epochs:
                self._log(f"resume: planned epochs changed {saved.epochs} -> {cfg.epochs} (the schedule stretches)")
            saved.epochs, saved.workers, saved.device, saved.out = cfg.epochs, cfg.workers, cfg.device, cfg.out
            cfg = saved
        self.cfg = cfg
        self.per_rank_batch = distributed.per_rank_batch(cfg.batch_size, self.dist.world_size)
        self.device = self.dist.device if self.dist.enabled else pick_device(cfg.device)
        self.markup = markup_for(cfg.points)
        # the weights to fine-tune from, before the (slow) data loading: a bad file fails at once
        self.init_ckpt = load_init(cfg) if cfg.init and self.ckpt is None else None
        # the teachers too (--teacher): a missing or mismatched one fails before the data loads
        self.teacher, self.teacher_notes = Teacher.load(cfg) if cfg.teacher else (None, [])
        if self.dist.is_main:
            check_writable_folder(self.out)  # a read-only or full run folder fails now, not after an epoch
            clear_run_folder(self.out, overwrite and self.ckpt is None)
        # DataLoader workers are the parallelism; OpenCV's own pool in each of them oversubscribes
        # the cores (2x slower on 16 cores). Set before forking: setNumThreads in a forked worker hangs.
        cv2.setNumThreads(1)
        seed_everything(cfg.seed)
        self._load_data()
        self._build()

    def _log(self, msg: str) -> None:
        """Log from rank 0 only (every rank would say the same)."""
        if self.dist.is_main:
            log(msg)

    def _check_ranks_agree_on_start(self) -> None:
        """Under DDP, every rank must resume from the same epoch (or none): a run folder that some
        nodes cannot see would otherwise desynchronise the ranks."""
        if not self.dist.enabled:
            return
        mine = None if self.ckpt is None else int(self.ckpt["epoch"])
        seen = distributed.all_gather_object(self.dist, mine)
        if len(set(seen)) > 1:
            raise AsmnetError(f"{self.last_path}: the ranks see different checkpoints (epoch per rank: {seen}); "
                              "the run folder must be on a file system every node shares")

    def _load_data(self) -> None:
        cfg = self.cfg
        records, errors = load_many(cfg.data, n_points=cfg.points)
        keys = [r.key for r in records]
        train_idx, val_idx, split = split_keys(keys, cfg.val_fraction, cfg.group_pattern, cfg.split_seed)
        if not train_idx:
            raise AsmnetError("no training faces left after the validation split")
        if self.dist.is_main:
            write_json_atomic(self.out / "split.json", split)
        self.split = {k: v for k, v in split.items() if k != "val_keys"}
        zero_based = [dataclasses.replace(r, points=r.points - cfg.label_origin) for r in records]
        train_regions, kept, errs_t = load_regions([zero_based[i] for i in train_idx], cfg.input_size,
                                                   keep_off_image=cfg.keep_off_image)
        val_regions, kept_v, errs_v = load_regions([zero_based[i] for i in val_idx], cfg.input_size,
                                                   keep_off_image=cfg.keep_off_image)
        problems = errors + errs_t + errs_v
        # faces kept without a pose are notes, not unusable files
        self.notes = [e for e in problems if isinstance(e, DataNote)]
        self.failures = [e for e in problems if not isinstance(e, DataNote)]
        for err in self.notes:
            self._log(f"note: {err}")
        for err in self.failures:
            self._log(f"skipped: {err}")
        self.val_keys = [records[val_idx[i]].key for i in kept_v]
        train_folders = [key_folder(records[train_idx[i]].key) for i in kept]
        self.train_repeats = [int(cfg.oversample.get(f, 1)) for f in train_folders]
        for folder, times in cfg.oversample.items():
            n = train_folders.count(folder)
            if n == 0:
                raise AsmnetError(f"--oversample {folder}={times}: no training faces come from a folder named {folder!r}")
            self._log(f"oversampling {folder}: {n} training faces x {times} per epoch")
        self.train_regions, self.val_regions = train_regions, val_regions
        self._log(f"data: {len(train_regions)} training faces, {len(val_regions)} validation faces "
                  f"({split['n_val_groups']} groups), {len(self.failures)} files skipped"
                  + (f", {len(self.notes)} faces kept without pose" if self.notes else ""))

    def _build(self) -> None:
        cfg = self.cfg
        init = self.init_ckpt
        if self.ckpt is not None or init is not None:
            self.shape_model = ShapeModel.from_dict((self.ckpt or init)["shape_model"])
        elif not self.dist.enabled:
            self.shape_model = fit_shape_model(self.train_regions, cfg)
        else:  # rank 0 fits it, the others receive it: every rank holds the very same numbers
            fitted = fit_shape_model(self.train_regions, cfg).to_dict() if self.dist.is_main else None
            self.shape_model = ShapeModel.from_dict(distributed.broadcast_object(self.dist, fitted))
        self._log(f"shape model: {self.shape_model.n_components} components keep "
                  f"{self.shape_model.explained:.1%} of the variance (asked {self.shape_model.variance_share:.1%})")
        self.model = build_model({"num_points": cfg.points, "width": cfg.width, "arch": cfg.arch,
                                  "dropout": cfg.dropout, "head": cfg.head})
        self.model.set_landmark_bias(torch.as_tensor(self.shape_model.mean, dtype=torch.float32))
        for m in self.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = cfg.bn_momentum
        if init is not None:  # load_init checked that its trunk is this run's
            theirs = model_from_checkpoint(init, cfg.init).state_dict()
            # another landmark head (pooled -> grid): the trunk and pose head carry over, the new
            # head starts fresh
            missing, unused = self.model.load_state_dict(theirs, strict=init["model_config"].get("head", "pooled") == cfg.head)
            fresh = sorted({k.split(".")[0] for k in missing})
            self._log(f"initialised from {cfg.init}" + (f" (new: {', '.join(fresh)}; not used: "
                      f"{', '.join(sorted({k.split('.')[0] for k in unused}))})" if missing or unused else ""))
        self.model.to(self.device)
        # the averaged weights are what validation sees and best.pt ships, when enabled
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False) if cfg.ema > 0 else None
        # self.model stays the plain network (config, state dicts without "module."); self.net is
        # what the training step calls: the same network, or DDP around it
        self.net: torch.nn.Module = self.model
        if self.dist.enabled:
            self._wrap_ddp()
        self.loss_fn = ASMLoss(self.shape_model, cfg.loss, cfg.point_loss, cfg.pose_weight, cfg.head_l2,
                               cfg.cell_weight, cfg.teacher_weight if cfg.teacher else 0.0).to(self.device)
        self.dataset = FaceDataset(self.train_regions, cfg.input_size, self.markup,
                                   AugmentConfig(**cfg.augment), cfg.seed, cfg.crop_scale, self.train_repeats)
        if self.dist.enabled:  # whole global batches, each rank its share of every one
            self.sampler = EpochSampler(len(self.dataset), cfg.seed, rank=self.dist.rank,
                                        world_size=self.dist.world_size, batch_size=cfg.batch_size)
        else:
            self.sampler = EpochSampler(len(self.dataset), cfg.seed)
        # The loader draws its workers' base seed from a generator when it starts them: from the
        # global torch RNG by default, which dropout also draws from. Persistent workers start once
        # per session, so a resumed run made that draw at another point than an uninterrupted one
        # and its dropout masks differed. Its own generator keeps the global RNG to the network.
        # (The samples do not depend on it: each comes from (seed, epoch, index).)
        self.loader = DataLoader(self.dataset, batch_size=self.per_rank_batch, sampler=self.sampler,
                                 num_workers=cfg.workers, drop_last=len(self.dataset) > cfg.batch_size,
                                 pin_memory=self.device.type == "cuda", persistent_workers=cfg.workers > 0,
                                 generator=torch.Generator().manual_seed(cfg.seed))
        self.steps_per_epoch = len(self.loader)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total, warmup = cfg.epochs * self.steps_per_epoch, cfg.warmup_epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, warmup, total))
        self.val_data = validation_tensors(self.val_regions, cfg) if self.val_regions else None
        if self.teacher is not None:
            self._log_teacher()
        self.start_epoch, self.history, self.best_nme, self.wall_time = 0, [], float("inf"), 0.0
        if self.ckpt is not None:
            self._restore(self.ckpt)

    def _log_teacher(self) -> None:
        """What Teacher.load had to say, and the teachers' validation NME: a sanity check of what the
        student is taught."""
        for note in self.teacher_notes:
            self._log(note)
        if self.val_data is not None:
            crops, targets, _ = self.val_data
            taught = torch.cat([self.teacher(crops[i : i + 256]) for i in range(0, len(crops), 256)])
            n = self.cfg.points
            nmes = nme_percent(taught.numpy().reshape(-1, n, 2), targets.numpy().reshape(-1, n, 2), self.markup)
            self._log(f"teacher: {len(self.teacher.models)} model(s) with flip TTA, validation NME {nmes.mean():.3f} %")

    def _wrap_ddp(self) -> None:
        """Synchronised BatchNorm (cfg.sync_bn), DistributedDataParallel, per-rank dropout masks."""
        cfg, ctx = self.cfg, self.dist
        if cfg.sync_bn:
            self.model = distributed.convert_sync_batchnorm(self.model, self.device)
        # DDP copies rank 0's weights and buffers to every rank here
        # A step whose faces on some rank have no pose label leaves that rank's pose head out of
        # the loss; DDP must then be told that parameters may go unused (it costs a graph walk per
        # step, so only when some training face lacks a pose: data without pose.csv, the common case).
        unlabelled = any(r.pose is None or not np.isfinite(r.pose).all() for r in self.train_regions)
        self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                           find_unused_parameters=unlabelled)
        if self.ema is not None:
            self.ema.load_state_dict(self.model.state_dict())
        # the same seed built the same network everywhere; dropout should differ between ranks
        torch.manual_seed(cfg.seed + 1_000_003 * (ctx.rank + 1))

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else self.model

    @torch.no_grad()
    def update_ema(self) -> None:
        for e, p in zip(self.ema.state_dict().values(), self.model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.lerp_(p, 1.0 - self.cfg.ema)
            else:
                e.copy_(p)

    def _restore(self, ckpt: dict) -> None:
        try:
            self.model.load_state_dict(ckpt.get("train_state_dict") or ckpt["state_dict"])
            if self.ema is not None:
                self.ema.load_state_dict(ckpt["state_dict"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # another run's last.pt, or a damaged one
            raise ModelError(self.last_path, f"does not fit the run it was saved with ({first_line(exc)})") from None
        # a stretched plan (more epochs) recomputes the schedule from the restored step
        total = self.cfg.epochs * self.steps_per_epoch
        warmup = self.cfg.warmup_epochs * self.steps_per_epoch
        self.scheduler.lr_lambdas[0] = lambda s: lr_factor(s, warmup, total)
        self.start_epoch = ckpt["epoch"] + 1
        self.history, self.best_nme = list(ckpt["history"]), ckpt["best_nme"]
        self.wall_time = ckpt.get("wall_time", 0.0)
        rng, saved_world = ckpt["rng"], ckpt.get("world_size", 1)
        if self.dist.enabled:
            ranks = rng.get("ranks") or []
            rng = ranks[self.dist.rank] if len(ranks) == self.dist.world_size else None
            if rng is None:
                self._log(f"resume: {saved_world} process(es) -> {self.dist.world_size}: the same global batch and "
                          "schedule go on; dropout masks are drawn afresh")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if self.device.type == "cuda" and rng.get("cuda") is not None:
                torch.cuda.set_rng_state(rng["cuda"])
        self._log(f"resumed {self.last_path} after epoch {self.start_epoch} (best val NME {self.best_nme:.3f} %)")

    def checkpoint(self, epoch: int) -> dict:
        """Everything to resume from (the unwrapped model's weights). Under DDP every rank must
        call it (it gathers each rank's RNG state); only rank 0 gets the checkpoint, the others {}."""
        cuda_rng = torch.cuda.get_rng_state() if self.device.type == "cuda" else None
        rng = {"torch": torch.get_rng_state(), "cuda": cuda_rng}
        if self.dist.enabled:
            rng["ranks"] = distributed.all_gather_object(self.dist, dict(rng))
        if not self.dist.is_main:
            return {}
        return {
            "model_config": self.model.config,
            "input_size": self.cfg.input_size,
            "crop_scale": self.cfg.crop_scale,
            "label_origin": self.cfg.label_origin,
            "markup": self.markup.name,
            "shape_model": self.shape_model.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.eval_model.state_dict().items()},
            "train_state_dict": None if self.ema is None else {
                k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),  # lambdas are stored as None: rebuilt on resume
            "epoch": epoch,
            "history": self.history,
            "best_nme": self.best_nme,
            "wall_time": self.wall_time,
            "rng": rng,
            "world_size": self.dist.world_size,
            "train_config": asdict(self.cfg),
            "split": self.split,
            "package_version": __version__,
            "git_commit": git_commit(),
        }

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training set; the mean loss parts over all ranks, and global img/s."""
        self.net.train()
        self.sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        n_batches, seen, t0 = 0, 0, time.time()
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False,
                   disable=None if self.dist.is_main else True, file=sys.stderr, dynamic_ncols=True)
        world = self.dist.world_size
        for crops, targets, poses in bar:
            # the teachers read the uint8 crops on the CPU, before they move
            taught = None if self.teacher is None else self.teacher(crops).to(self.device)
            crops = crops.to(self.device, non_blocking=True).float()
            targets, poses = targets.to(self.device), poses.to(self.device)
            if self.cfg.recrop:
                crops, targets = self._recrop_share(crops, targets)
            pred_pts, pred_pose, *cell_logits = self.net(crops)  # a grid head also returns its cell scores
            loss, parts = self.loss_fn(pred_pts, pred_pose, targets, poses, epoch, self.cfg.epochs, self.model,
                                       cell_logits[0] if cell_logits else None, taught)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.update_ema()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            n_batches += 1
            seen += len(crops)
            bar.set_postfix(loss=f"{parts['total']:.4g}", img_s=f"{seen * world / (time.time() - t0):.0f}")
        elapsed = time.time() - t0
        if self.dist.enabled:
            merged: dict[str, float] = {}
            gathered = distributed.all_gather_object(self.dist, (sums, n_batches))
            for rank_sums, _ in gathered:
                for k, v in rank_sums.items():
                    merged[k] = merged.get(k, 0.0) + v
            sums, n_batches = merged, sum(b for _, b in gathered)
        out = {k: v / max(1, n_batches) for k, v in sums.items()}
        out["images_per_s"] = seen * world / max(1e-9, elapsed)
        return out

    def _recrop_share(self, crops: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``recrop`` share of a batch cut again around the prediction of :attr:`eval_model`
        (:func:`recrop_batch`); the batch is shuffled already, so no random draw is needed."""
        k = round(self.cfg.recrop * len(crops))
        if not k:
            return crops, targets
        guide = self.eval_model
        guide.eval()
        with torch.no_grad():
            pred = guide(crops[:k])[0]
        self.net.train()  # the guide may be the trained model itself (no EMA)
        again, moved = recrop_batch(crops[:k], targets[:k], pred, self.cfg.crop_scale)
        return torch.cat([again, crops[k:]]), torch.cat([moved, targets[k:]])

    def fit(self, stop_after: int | None = None) -> dict:
        """Train to the planned epoch count, or only up to epoch ``stop_after`` (the rest resumes
        later with the same plan: time-boxed sessions)."""
        cfg = self.cfg
        if self.dist.enabled:
            where = (f"on {self.dist.world_size} processes ({self.device.type}, {self.dist.backend}"
                     f"{', synchronised BatchNorm' if cfg.sync_bn else ', per-rank BatchNorm'}), "
                     f"global batch {cfg.batch_size} = {self.dist.world_size} x {self.per_rank_batch}")
        else:
            where = f"on {self.device}, batch {cfg.batch_size}"
        self._log(f"training {self.model.config} at {cfg.input_size} px, {count_parameters(self.model):,} parameters, "
                  f"{where}, lr {cfg.lr}, {cfg.epochs} epochs, seed {cfg.seed}")
        if self.dist.is_main:
            write_json_atomic(self.out / "config.json", asdict(cfg))
        end = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        for epoch in range(self.start_epoch, end):
            t0 = time.time()
            train_stats = self.train_epoch(epoch)
            record = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "train": train_stats}
            if self.val_data is not None:
                record.update(self._validate())
            self.wall_time += time.time() - t0
            record["wall_time"] = self.wall_time
            self.history.append(record)
            improved = self.val_data is not None and record["val_nme"] < self.best_nme
            if improved:
                self.best_nme = record["val_nme"]
            ckpt = self.checkpoint(epoch)
            if self.dist.is_main:
                save_checkpoint(self.last_path, ckpt)
                if improved or self.val_data is None:
                    save_checkpoint(self.best_path, without_training_state(ckpt))
                self._write_reports()
            # no rank starts the next epoch (or returns) before this one's files are written
            distributed.barrier(self.dist)
            val = ""
            if self.val_data is not None:
                val = f", val NME {record['val_nme']:.3f} % (re-crop {record['val_nme_recrop']:.3f})"
            self._log(f"epoch {epoch + 1}/{cfg.epochs}: loss {train_stats['total']:.5f}{val}, "
                      f"{train_stats['images_per_s']:.0f} img/s, {time.time() - t0:.1f} s")
        return self.history[-1] if self.history else {}

    def _validate(self) -> dict:
        """:func:`validate`; under DDP every rank takes a slice of the faces, with rank 0's weights."""
        if not self.dist.enabled:
            return validate(self.eval_model, self.val_data, self.val_keys, self.cfg, self.device, self.val_regions)
        distributed.broadcast_state(self.dist, self.eval_model)  # per-rank BatchNorm buffers may differ
        return validate_sharded(self.eval_model, self.val_data, self.val_keys, self.cfg, self.dist, self.val_regions)

    def _write_reports(self) -> None:
        write_text_atomic(self.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        try:
            plot_curves(self.history, self.out / "curves.png") if self.val_data is not None else None
        except ImportError:
            pass  # matplotlib is optional; the numbers are in metrics.jsonl
        best = min(self.history, key=lambda h: h.get("val_nme", float("inf")))
        write_json_atomic(self.out / "model_card.json", {
            "model": "ASMNet", "package_version": __version__, "git_commit": git_commit(),
            "data": [os.path.abspath(d) for d in self.cfg.data],
            "split": self.split, "config": asdict(self.cfg), "seed": self.cfg.seed,
            "shape_model": {"components": self.shape_model.n_components,
                            "explained": self.shape_model.explained},
            "parameters": count_parameters(self.model),
            "epochs_done": len(self.history), "wall_time_s": round(self.wall_time, 1),
            "device": str(self.device), "world_size": self.dist.world_size, "torch": torch.__version__,
            "best_epoch": best["epoch"] + 1,
            "best": {k: v for k, v in best.items() if k.startswith("val_")},
            "last": {k: v for k, v in self.history[-1].items() if k.startswith("val_")},
        })


def train(
    cfg: TrainConfig,
    resume: bool = False,
    stop_after: int | None = None,
    timeout_min: float = distributed.DEFAULT_TIMEOUT_MIN,
    overwrite: bool = False,
) -> dict:
    """Train (or resume) a run; returns the last epoch's record, with "skipped": the unusable files.

    ``cfg.out`` must not hold a run unless ``resume`` (continue its last.pt) or ``overwrite``
    (its files are removed first): :func:`check_run_folder`, OutputError otherwise.

    Under torchrun (WORLD_SIZE > 1 in the environment) this process joins the process group as
    one rank of a DistributedDataParallel job (collectives time out after ``timeout_min`` minutes);
    otherwise it is a plain single-process run.
    """
    ctx = distributed.setup(cfg.device, timeout_min)
    try:
        run = Run(cfg, resume, ctx, overwrite)
        result = {**run.fit(stop_after), "skipped": [str(e) for e in run.failures]}
    except BaseException:
        if ctx.backend == "gloo":  # NCCL's teardown can block on a dead peer: let the process exit
            distributed.cleanup(ctx)
        raise
    distributed.cleanup(ctx, graceful=True)
    return result
