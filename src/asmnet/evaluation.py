"""``asmnet evaluate``: NME, failure rate, CED/AUC and pose MAE on annotated faces.

Default protocol (as in published tables): the face box is the tight box of the ground-truth
points, cropped exactly as in training. With a detector, each image is searched, the detection
overlapping the ground truth is calibrated to the model's box convention, and misses are counted.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import DataError
from .formats import FaceRecord, key_folder, read_image
from .formats.image import max_pixels_limit
from .formats.wflw import WFLW_ATTRIBUTES
from .geometry import tight_box
from .inference import crop_faces, predict_crops, units_to_image
from .metrics import nme as nme_percent
from .metrics import normalising_distance, summarize
from .runtime import LandmarkModel


def read_keys(path: str | Path) -> set[str]:
    """Face keys from a run's split.json (its validation keys) or a text file, one key per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read key list ({exc.__class__.__name__})") from None
    if path.suffix == ".json":
        try:
            keys = json.loads(text)["val_keys"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(path, "not a split.json with val_keys") from None
        return set(keys)
    return {line.strip() for line in text.splitlines() if line.strip()}


def reference_box(record: FaceRecord, image: np.ndarray, model: LandmarkModel, detector=None) -> np.ndarray | None:
    """The box the model crops: the GT tight box, or the calibrated matching detection (None = miss)."""
    if detector is None:
        return tight_box(record.points)
    from .detection import match_detection, to_reference_box

    det = match_detection(detector.detect(image), record.points)
    if det is None:
        return None
    return to_reference_box(det.box, model.info.calibrations.for_detector(detector, model.info.name))


def evaluate(
    model: LandmarkModel,
    records: list[FaceRecord],
    norm: str = "inter-ocular",
    detector=None,
    batch_size: int = 32,
    asm_blend: float = 0.0,
    progress: bool = True,
    flip_tta: bool = False,
) -> dict:
    """Evaluate on records; returns the summary dict of :func:`asmnet.metrics.summarize` plus
    per-folder and per-attribute NME, detector misses, quality scores and unreadable files."""
    kept, preds, poses, quality, failures, misses = [], [], [], [], [], []
    pending: list[tuple[FaceRecord, np.ndarray, np.ndarray]] = []
    # settings that would fail every face fail once, here
    max_pixels_limit()
    if detector is not None:
        model.info.calibrations.for_detector(detector, model.info.name)  # ModelError when it has none

    def flush() -> None:
        if not pending:
            return
        crops = np.concatenate([c for _, c, _ in pending])
        mats = np.concatenate([m for _, _, m in pending])
        units, pose, q = predict_crops(model, crops, batch_size, asm_blend, flip_tta)
        preds.extend(units_to_image(units, mats, model.info))
        poses.extend(pose)
        quality.extend(q)
        kept.extend(r for r, _, _ in pending)
        pending.clear()

    usable, unusable = split_by_normaliser(records, model, norm)
    failures += unusable
    for rec in tqdm(usable, desc="evaluate", disable=not progress or None, file=sys.stderr, leave=False):
        try:
            image = read_image(rec.image)
            box = reference_box(rec, image, model, detector)
            if box is None:
                misses.append(rec.key)
                continue
            crops, mats = crop_faces(image, box[None], model.info)
        except DataError as exc:
            failures.append(str(exc) if exc.path is not None else f"{rec.image}: {exc}")
            continue
        except ValueError as exc:  # a face box the crop cannot use (degenerate or non-finite)
            failures.append(f"{rec.image}: cannot crop the face ({exc})")
            continue
        pending.append((rec, crops, mats))
        if len(pending) >= batch_size:
            flush()
    flush()
    if not kept:
        raise DataError(None, "no face could be evaluated" + (f" ({failures[0]})" if failures else ""))
    return summarize_results(model, kept, np.stack(preds), np.stack(poses), np.array(quality), norm,
                             failures, misses, len(records))


def split_by_normaliser(
    records: list[FaceRecord], model: LandmarkModel, norm: str
) -> tuple[list[FaceRecord], list[str]]:
    """The records with a positive ``norm`` distance, and one line for each of the others."""
    usable, unusable = [], []
    for rec in records:
        if rec.n_points != model.info.markup.n_points:
            unusable.append(f"{rec.image}: its annotation has {rec.n_points} points, the model "
                            f"{model.info.markup.n_points}")
            continue
        distance = normalising_distance(rec.points, model.info.markup, norm)[0]
        if distance > 0 and np.isfinite(distance):
            usable.append(rec)
        else:
            unusable.append(f"{rec.image}: the {norm} normalising distance of its annotation is {distance:g}, "
                            "so its NME is undefined")
    return usable, unusable


def summarize_results(model, kept, preds, poses, quality, norm, failures, misses, n_total) -> dict:
    gts = np.stack([r.points for r in kept])
    nmes = nme_percent(preds, gts, model.info.markup, norm)
    gt_pose = np.stack([r.pose if r.pose is not None else np.full(3, np.nan) for r in kept])
    has_pose = not np.isnan(gt_pose).all()
    out = summarize(nmes, [r.key for r in kept], poses if has_pose else None, gt_pose if has_pose else None)
    out["norm"] = norm
    for item, q in zip(out["per_image"], quality):
        item["quality"] = float(q)
    folders = defaultdict(list)
    for r, e in zip(kept, nmes):
        folders[key_folder(r.key)].append(e)
    out["per_folder"] = {f: {"n": len(v), "nme_mean": float(np.mean(v)), "nme_median": float(np.median(v))}
                         for f, v in sorted(folders.items())}
    if any(r.attributes for r in kept):
        out["per_attribute"] = {
            a: float(np.mean([e for r, e in zip(kept, nmes) if r.attributes.get(a)]))
            for a in WFLW_ATTRIBUTES if any(r.attributes.get(a) for r in kept)
        }
    out["detector_misses"] = len(misses)
    out["miss_rate"] = 100.0 * len(misses) / max(1, n_total - len(failures))
    out["missed"] = misses
    out["unreadable"] = failures
    out["model"] = model.info.name
    return out
