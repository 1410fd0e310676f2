"""Train a region refiner (:mod:`asmnet.regions`) on top of a landmark model: ``asmnet refiner``.

Each training face gets first predictions from the landmark model (``base``) on crops whose box
is jittered like a detector's, so the refiner learns from the model's own mistakes; every patch
is framed from those points moved again by a random similarity (``jitter_*``), and lightly
recoloured and blurred. The networks learn each part's true points in their patch (L1). The
split is the landmark trainer's (same fraction, group pattern and seed give the same validation
faces). After training, each kind is exported to ONNX, and the smallest face the refiner is used
on (``min_iod``) is chosen on the validation faces, started from the detector's box and the
default second look, as users run it. Every epoch of every kind is checkpointed; ``resume``
continues after the last finished epoch, with the same random stream (one seed per kind and epoch).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AsmnetError, OutputError
from ..fileio import read_small_json, write_atomic, write_json_atomic
from ..formats import FaceRecord, key_folder, load_many, read_image
from ..geometry import tight_box, transform_points
from ..markup import markup_for
from ..metrics import nme, normalising_distance
from ..nn.refiner import PatchEnsemble, PatchNet
from ..regions import (
    KINDS_68,
    RegionKind,
    RegionRefiner,
    cut_patch,
    mean_face,
    patch_matrix,
    points_from_patches,
    template_pixels,
    write_refiner_json,
)
from ..shape_regression import FILE_NAME as SHAPE_FILE
from ..shape_regression import ShapeRegression
from .refiner_config import RefinerConfig
from .shape_regression import fit_shape_regression
from .split import split_keys

# smallest faces (inter-ocular pixels) the refiner may be limited to; chosen on validation
MIN_IOD_CANDIDATES = (0.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 100.0, 120.0)
BOX_JITTER = (0.03, 0.04)
PATCHES_PER_FACE = 2  # per kind and epoch  # detector-like box error of the first predictions: centre and log-side SD
# the shape regression's candidates (chosen on validation): size groups (inter-ocular px edges) and ridge strengths
SHAPE_GROUPS = ((), (50.0,))
SHAPE_ALPHAS = (3.0, 10.0, 30.0)


@dataclass
class _Faces:
    """The run's faces: images, true points (0-based), first predictions (0-based) and the split."""

    records: list[FaceRecord]
    keys: list[str]
    images: list[np.ndarray]
    truth: np.ndarray
    first: list[np.ndarray]  # one (K, N, 2) per jittered pass
    train: np.ndarray
    val: np.ndarray


def _first_predictions(model, images: list[np.ndarray], truth: np.ndarray, origin: float, seed: int,
                       passes: int = 2) -> list[np.ndarray]:
    """The landmark model's points (0-based) from jittered ground-truth boxes, ``passes`` draws."""
    from ..inference import align_faces

    rng = np.random.default_rng(seed)
    boxes = np.stack([tight_box(p) for p in truth]) + origin
    centres, sides = (boxes[:, :2] + boxes[:, 2:]) / 2, np.max(boxes[:, 2:] - boxes[:, :2], axis=1)
    out = []
    for _ in range(passes):
        c = centres + rng.normal(0, BOX_JITTER[0], centres.shape) * sides[:, None]
        s = sides * np.exp(rng.normal(0, BOX_JITTER[1], sides.shape))
        jittered = np.concatenate([c - s[:, None] / 2, c + s[:, None] / 2], axis=1)
        out.append(align_faces(model, images, np.arange(len(images)), jittered).landmarks - origin)
    return out


def _load_faces(cfg: RefinerConfig, model, previous: RegionRefiner | None) -> _Faces:
    records, errors = load_many(cfg.data)
    if not records:
        raise AsmnetError(f"no faces in {', '.join(cfg.data)}" + (f" ({errors[0]})" if errors else ""))
    keys = [r.key for r in records]
    train, val, _ = split_keys(keys, cfg.val_fraction, cfg.group_pattern, cfg.split_seed)
    images = [read_image(r.image) for r in records]
    truth = np.stack([r.points for r in records]) - cfg.label_origin
    first = _first_predictions(model, images, truth + cfg.label_origin, cfg.label_origin, cfg.seed)
    if previous is not None:  # a later cascade stage starts where the earlier stages left the points
        owner = np.arange(len(images))
        first = [previous.refine(images, owner, f, 0.0) for f in first]
    return _Faces(records, keys, images, truth, first, np.array(train), np.array(val))


class _PatchMaker:
    """Patches and targets of one kind (training draws jitter and colour from ``rng``)."""

    def __init__(self, kind: RegionKind, face: np.ndarray, faces: _Faces, cfg: RefinerConfig):
        self.kind, self.faces, self.cfg = kind, faces, cfg
        self.markup = markup_for(faces.truth.shape[1])
        self.instances = kind.instances(self.markup)
        self.template = template_pixels(kind, face)

    def batch(self, items: np.ndarray, starts: np.ndarray | list, rng: np.random.Generator | None
              ) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
        """Patches (B, 3, S, S), targets (B, 2n) and the image -> patch matrices of (face, instance)
        ``items`` framed from ``starts``."""
        size = self.kind.size
        patches, targets, matrices = [], [], []
        for (face, inst), start in zip(items, starts):
            indices, mirrored = self.instances[inst]
            points = start[indices]
            if rng is not None:
                points = self._jitter(points, face, rng)
            matrix = patch_matrix(points, self.template, mirrored)
            patch = cut_patch(self.faces.images[face], matrix, size)[:, :, ::-1].astype(np.float32)  # BGR -> RGB
            if rng is not None:
                patch = self._recolour(patch, rng)
            patches.append(patch.transpose(2, 0, 1))
            targets.append((transform_points(self.faces.truth[face, indices], matrix) - self.template) / size)
            matrices.append(matrix)
        return (torch.from_numpy(np.ascontiguousarray(np.stack(patches))),
                torch.from_numpy(np.stack(targets).reshape(len(items), -1).astype(np.float32)), matrices)

    def _jitter(self, points: np.ndarray, face: int, rng: np.random.Generator) -> np.ndarray:
        iod = normalising_distance(self.faces.truth[face], self.markup)[0]
        angle = np.deg2rad(rng.normal(0, self.cfg.jitter_rotation))
        scale = np.exp(rng.normal(0, self.cfg.jitter_scale))
        turn = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = points.mean(0)
        return (points - centre) @ turn.T + centre + rng.normal(0, self.cfg.jitter_shift, 2) * iod

    @staticmethod
    def _recolour(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        patch = np.clip(patch * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25), 0, 255)
        if rng.random() < 0.15:
            patch = cv2.GaussianBlur(patch, (0, 0), rng.uniform(0.5, 1.5))
        return patch


def _train_kind(kind_index: int, maker: _PatchMaker, cfg: RefinerConfig, out: Path, log,
                stop_after: int | None = None) -> PatchNet | None:
    """Train (or resume) one kind's network; checkpoints OUT/<kind>.pt after every epoch. Returns
    None when ``stop_after`` ended it before its last epoch."""
    faces = maker.faces
    torch.manual_seed(cfg.seed + 1000 * kind_index)
    net = PatchNet(len(maker.kind.points), cfg.width, cfg.head, maker.kind.size)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    # every kind sees the same number of patches per epoch: a kind without a mirrored instance
    # draws each face twice (with different jitter), as a mirrored kind draws both sides
    items = np.array([(f, i % len(maker.instances)) for f in faces.train for i in range(PATCHES_PER_FACE)])
    steps = math.ceil(len(items) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.1)
    path, done = out / f"{maker.kind.name}.pt", 0
    if path.exists():
        state = _load_state(path)
        try:
            net.load_state_dict(state["state_dict"])
        except RuntimeError:  # the run was made with another --width or --head: one line, not a traceback
            made = state.get("config", {})
            raise AsmnetError(f"{path}: made with --width {made.get('width')} --head {made.get('head', 'pooled')}; "
                              f"resume it with those (here: --width {cfg.width} --head {cfg.head})") from None
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        done = int(state["epoch"])
    for epoch in range(done, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, kind_index, epoch])  # resumable: one stream per epoch
        net.train()
        order, total, t0 = rng.permutation(len(items)), 0.0, time.time()
        for step in range(steps):
            chosen = items[order[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
            source = faces.first[int(rng.integers(len(faces.first)))]
            x, y, _ = maker.batch(chosen, [source[f] for f, _ in chosen], rng)
            loss = F.l1_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        _save_state(path, {"state_dict": net.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": epoch + 1, "config": asdict(cfg)})
        log(f"{maker.kind.name} epoch {epoch + 1}/{cfg.epochs}: loss {total / steps:.4f} ({time.time() - t0:.0f} s)")
        if stop_after is not None and epoch + 1 >= stop_after < cfg.epochs:
            return None
    net.eval()
    return net


def _ensemble_member(run: Path, kind: RegionKind) -> tuple[PatchNet, dict]:
    """The finished ``kind`` network of the refiner run ``run`` (``--ensemble-with``), and what it was
    (run, width, head, seed, epochs, base, after). Raises :class:`AsmnetError` (one line) when it is missing, unfinished
    or not a network of this kind."""
    path = run / f"{kind.name}.pt"
    if not path.is_file():
        raise AsmnetError(f"{path}: no {kind.name} network to average with (--ensemble-with needs a run that "
                          "trained every kind of this one)")
    state = _load_state(path)
    try:
        config, done, planned = state["config"], int(state["epoch"]), int(state["config"]["epochs"])
        net = PatchNet(len(kind.points), int(config["width"]), config.get("head", "pooled"), kind.size)
        net.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise AsmnetError(f"{path}: not a {kind.name} network of {len(kind.points)} points "
                          f"({type(exc).__name__})") from None
    if done < planned:
        raise AsmnetError(f"{path}: unfinished ({done} of {planned} epochs); finish that run first")
    net.eval()
    return net, {"run": str(run), "width": int(config["width"]), "head": config.get("head", "pooled"),
                 "seed": config.get("seed"), "epochs": done, "base": config.get("base"), "after": config.get("after")}


def _load_members(runs: list[str], kinds: list[RegionKind]) -> tuple[dict[str, list[PatchNet]], list[dict]]:
    """Each kind's finished networks in the runs of ``--ensemble-with`` (checked before any training),
    and a description of each run's members."""
    loaded = {k.name: [_ensemble_member(Path(run), k) for run in runs] for k in kinds}
    described = ([{**info, "kinds": [k.name for k in kinds]} for _, info in next(iter(loaded.values()))]
                 if kinds and runs else [])
    return {name: [net for net, _ in pairs] for name, pairs in loaded.items()}, described


def _save_state(path: Path, state: dict) -> None:
    """One kind's training state, written atomically (a kill leaves the previous epoch's)."""
    try:
        write_atomic(path, lambda tmp: torch.save(state, tmp))
    except RuntimeError as exc:  # torch.save reports a full disk as a RuntimeError
        raise OutputError(path, f"cannot write ({exc})") from None


def _load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: one line, not a traceback
        raise AsmnetError(f"{path}: not a refiner checkpoint ({type(exc).__name__})") from None


def _refine_with(nets: dict[str, PatchNet], makers: dict[str, _PatchMaker], starts: np.ndarray,
                 faces_idx: np.ndarray) -> np.ndarray:
    """Points (K, N, 2, 0-based) after every kind's network moved its parts (PyTorch, no gating)."""
    out = starts.copy()
    with torch.no_grad():
        for name, net in nets.items():
            maker = makers[name]
            for inst, (indices, _) in enumerate(maker.instances):
                for lo in range(0, len(faces_idx), 512):  # in chunks: training sets run through it too
                    items = np.array([(f, inst) for f in faces_idx[lo:lo + 512]])
                    x, _, matrices = maker.batch(items, list(starts[lo:lo + 512]), None)
                    out[lo:lo + 512, indices] = points_from_patches(net(x).numpy(), maker.template, maker.kind.size,
                                                                    matrices)
    return out


def _gate(start: np.ndarray, refined: np.ndarray, kinds: list[RegionKind], markup) -> np.ndarray:
    """``start`` with each kind's points taken from ``refined`` on faces of at least its ``min_iod``."""
    out, iod = start.copy(), normalising_distance(start, markup)
    for kind in kinds:
        part = np.concatenate([indices for indices, _ in kind.instances(markup)])
        use = iod >= kind.min_iod
        out[np.ix_(use, part)] = refined[np.ix_(use, part)]
    return out


def _choose_shape_regression(faces: _Faces, nets: dict[str, PatchNet], makers: dict[str, _PatchMaker],
                             kinds: list[RegionKind], face: np.ndarray, val_points: np.ndarray, truth: np.ndarray
                             ) -> tuple[ShapeRegression | None, dict]:
    """The shape regression (fitted on the training faces' points after this stage's part networks)
    whose size groups and ridge strength give the lowest validation NME from ``val_points``, or None
    when none lowers it; and the scores of every candidate."""
    markup = markup_for(faces.truth.shape[1])
    train = faces.train
    starts = [_gate(f[train], _refine_with({k.name: nets[k.name] for k in kinds}, makers, f[train], train), kinds, markup)
              for f in faces.first]
    steps = [v for v in MIN_IOD_CANDIDATES if v > 0]
    before = float(nme(val_points, truth).mean())
    best, best_score, scores = None, before, {}
    for groups in SHAPE_GROUPS:
        for alpha in SHAPE_ALPHAS:
            try:
                regression = fit_shape_regression(starts, faces.truth[train], face, groups, steps, alpha)
            except ValueError:  # too few training faces in a size group
                continue
            score = float(nme(regression.apply(val_points), truth).mean())
            scores[f"groups {list(groups)}, alpha {alpha:g}"] = round(score, 4)
            if score < best_score:
                best, best_score = regression, score
    return best, {"before": round(before, 4), "candidates": scores, "chosen": best is not None and
                  {"groups": best.groups.tolist(), "nme": round(best_score, 4)}}


def _export(nets: dict[str, PatchNet], makers: dict[str, _PatchMaker], folder: Path) -> None:
    """One ONNX graph per kind (input ``patches``, output ``points``, dynamic batch)."""
    from ..fileio import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    for name, net in nets.items():
        size = makers[name].kind.size
        dummy = torch.zeros(1, 3, size, size)

        def write(tmp: Path, net=net, dummy=dummy) -> None:
            torch.onnx.export(net, (dummy,), str(tmp), input_names=["patches"], output_names=["points"],
                              dynamic_axes={"patches": {0: "batch"}, "points": {0: "batch"}}, opset_version=17,
                              dynamo=False)

        write_atomic(folder / f"{name}.onnx", write)


def _stage_folder(refiner: Path, previous: RegionRefiner | None) -> Path:
    """Where this run's stage goes: ``refiner`` itself, or after ``previous`` (copied into ``refiner``
    with its stages) as the last stage's ``next/``."""
    if previous is None:
        return refiner
    if refiner.exists():
        shutil.rmtree(refiner)
    shutil.copytree(previous.folder, refiner)
    last = refiner
    while (last / "next" / "refiner.json").is_file():
        last = last / "next"
    meta = read_small_json(last / "refiner.json")
    write_json_atomic(last / "refiner.json", {**meta, "next": "next"})
    return last / "next"


def _validation_rows(pred: np.ndarray, truth: np.ndarray, folders: np.ndarray) -> dict[str, Any]:
    per_face = nme(pred, truth)
    rows = {"all": round(float(per_face.mean()), 4)}
    photos = folders != "udacity_train"
    if photos.any():
        rows["photos"] = round(float(per_face[photos].mean()), 4)
    rows.update({str(f): round(float(per_face[folders == f].mean()), 4) for f in sorted(set(folders))})
    return rows


def _region_errors(points: np.ndarray, truth: np.ndarray, markup) -> dict[str, float]:
    """Mean point error (pixels) of each region of the markup."""
    return {n: round(float(np.linalg.norm(points[:, list(i)] - truth[:, list(i)], axis=2).mean()), 4)
            for n, i in markup.regions}


def _remeasure_earlier(root: Path, points: list[np.ndarray], truth: np.ndarray, folders: np.ndarray, markup,
                       base: str) -> None:
    """Give each earlier stage, from ``root`` down its ``next/`` folders, the rows of this run's base:
    ``points`` are the validation faces' network points, then each earlier stage's output. What a
    stage recorded is kept as ``earlier_base`` (the model cards say on which network it was trained)."""
    folder = root
    for before, after in zip(points, points[1:]):
        meta = read_small_json(folder / "refiner.json")
        recorded = meta["validation"]
        meta["validation"] = {**recorded, "base": base, "before": _validation_rows(before, truth, folders),
                              "after": _validation_rows(after, truth, folders),
                              "regions_before": _region_errors(before, truth, markup),
                              "regions_after": _region_errors(after, truth, markup),
                              "earlier_base": {k: recorded.get(k) for k in ("base", "before", "after")}}
        write_json_atomic(folder / "refiner.json", meta)
        folder = folder / "next"


def train_refiner(cfg: RefinerConfig, resume: bool = False, log=print, stop_after: int | None = None) -> dict | None:
    """Train, export and validate a refiner; returns the validation summary (also
    OUT/refiner_validation.json), or None when ``stop_after`` (an epoch) stopped every kind early
    (``resume`` continues it).

    Raises :class:`AsmnetError` for unusable data or an OUT that holds another run without ``resume``.
    """
    from ..detection import make_detector
    from ..evaluation import reference_box
    from ..inference import DEFAULT_REFINE, EARLY_STOP, align_faces
    from ..runtime import load_model

    out = Path(cfg.out)
    if out.exists() and any(out.glob("*.pt")) and not resume:
        raise AsmnetError(f"{out}: holds a refiner run; continue it with --resume or choose another --out")
    kinds = [k for k in KINDS_68 if k.name in cfg.kinds]
    averaged = [k for k in kinds if k.name in (cfg.ensemble_kinds or cfg.kinds)]
    members, members_info = _load_members(cfg.ensemble_with, averaged)  # a bad member fails before hours of work
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "refiner_config.json", asdict(cfg))
    model = load_model(cfg.base, threads=2)
    previous = RegionRefiner(cfg.after) if cfg.after else None
    faces = _load_faces(cfg, model, previous)
    markup = markup_for(faces.truth.shape[1])
    face = mean_face(faces.truth[faces.train], markup)
    log(f"{len(faces.train)} training / {len(faces.val)} validation faces; base {cfg.base}")
    makers = {k.name: _PatchMaker(k, face, faces, cfg) for k in kinds}
    nets = {k.name: _train_kind(i, makers[k.name], cfg, out, log, stop_after) for i, k in enumerate(kinds)}
    if any(net is None for net in nets.values()):
        log(f"stopped after epoch {stop_after}; --resume continues")
        return None
    if cfg.ensemble_with:  # each kind's graph is then its members' mean
        nets = {name: PatchEnsemble([net, *members[name]]).eval() if name in members else net
                for name, net in nets.items()}

    # validation starts as users run it: the detector's box (or the true one), then the default second look
    detector = None if cfg.detector == "none" else make_detector(cfg.detector)
    val = faces.val
    val_images = [faces.images[i] for i in val]
    boxes = [reference_box(faces.records[i], faces.images[i], model, detector) for i in val]
    found = np.array([b is not None for b in boxes])
    if not found.any():
        raise AsmnetError(f"the detector {cfg.detector} found none of the {len(val)} validation faces "
                          "(--detector none starts them from their true boxes)")
    kept = np.flatnonzero(found)
    start = align_faces(model, [val_images[k] for k in kept], np.arange(len(kept)), np.stack([boxes[k] for k in kept]),
                        refine=DEFAULT_REFINE, straighten=True, early_stop=EARLY_STOP).landmarks - cfg.label_origin
    # the validation points after each earlier stage (their rows, with --remeasure-earlier)
    stage_points = [start, *(previous.refine_stages([val_images[k] for k in kept], np.arange(len(kept)), start, 0.0)
                             if previous is not None else [])]
    start = stage_points[-1]
    val_faces = val[kept]
    refined = _refine_with(nets, makers, start, val_faces)
    truth, folders = faces.truth[val_faces], np.array([key_folder(faces.keys[i]) for i in val_faces])
    # each kind moves its own points only, so each kind's limit (or its absence) is chosen alone
    chosen_kinds, scores = [], {}
    for kind in kinds:
        scores[kind.name] = {limit: float(nme(_gate(start, refined, [replace(kind, min_iod=limit)], markup), truth).mean())
                             for limit in MIN_IOD_CANDIDATES}
        limit = min(scores[kind.name], key=scores[kind.name].get)
        helps = scores[kind.name][limit] < float(nme(start, truth).mean())
        if helps or not cfg.select_kinds:  # a kind that never helps is left out
            chosen_kinds.append(replace(kind, min_iod=limit))
    parts_only = gated = _gate(start, refined, chosen_kinds, markup)
    regression, shape_report = None, None
    if cfg.shape_regression:
        log("fitting the shape regression")
        regression, shape_report = _choose_shape_regression(faces, nets, makers, chosen_kinds, face, gated, truth)
        if regression is not None:
            gated = regression.apply(gated)
    if not chosen_kinds and regression is None:
        best_part = min((min(row.values()), name) for name, row in scores.items()) if scores else None
        best_shape = min((shape_report or {}).get("candidates", {}).values(), default=None)
        raise AsmnetError(f"neither a face-part network nor the shape regression lowered the validation NME "
                          f"({float(nme(start, truth).mean()):.4f}; best part kind: "
                          f"{f'{best_part[1]} {best_part[0]:.4f}' if best_part else 'none trained'}; best shape "
                          f"regression: {f'{best_shape:.4f}' if best_shape is not None else 'none'}): no refiner written")
    folder = _stage_folder(out / "refiner", previous)
    _export({k.name: nets[k.name] for k in chosen_kinds}, makers, folder)
    if regression is not None:
        regression.save(folder / SHAPE_FILE)
    summary = {"base": cfg.base, "detector": cfg.detector, "faces": int(len(val_faces)),
               "detector_misses": int((~found).sum()),
               "kinds": {k.name: k.min_iod for k in chosen_kinds},
               "nme_by_kind_and_min_iod": {n: {str(k): round(v, 4) for k, v in row.items()} for n, row in scores.items()},
               "before": _validation_rows(start, truth, folders), "after": _validation_rows(gated, truth, folders),
               "after_parts": _validation_rows(parts_only, truth, folders), "shape_regression": shape_report,
               "ensemble_with": members_info,
               "regions_before": _region_errors(start, truth, markup), "regions_after": _region_errors(gated, truth, markup)}
    write_refiner_json(folder, chosen_kinds, face, {"base": cfg.base, "config": asdict(cfg), "validation": summary,
                                                    **({"shape_regression": SHAPE_FILE} if regression else {})})
    if cfg.remeasure_earlier:
        _remeasure_earlier(out / "refiner", stage_points, truth, folders, markup, cfg.base)
    # the exported graphs must give what the networks gave
    check = RegionRefiner(folder).refine(val_images, np.array(kept), start + cfg.label_origin, cfg.label_origin)
    summary["onnx_max_difference_px"] = float(np.abs(check - cfg.label_origin - gated).max())
    write_json_atomic(out / "refiner_validation.json", summary)
    log(f"validation ({cfg.detector} + second look): NME {summary['before']} -> {summary['after']}; "
        f"kinds used (smallest face, inter-ocular px): {summary['kinds']}")
    return summary
