"""How much of the GT-box number comes from the box itself: the ground-truth box leaks the answer.

The published protocol crops the tight box of the ground-truth points, so the crop's border sits
exactly ``crop_scale`` outside the face's extreme points (jaw ends, chin, brows). A network trained
with little crop jitter learns to read those points off the border. Users never have that box:
their first crop comes from a detector, and the second look crops from the network's own points.
For every validation face (``--keys``) and every ``--model``, one network pass each from:

- ``gt``: the tight box of the ground-truth points (the protocol; issue 12's targets);
- ``gt_moved``: the same box moved and resized by the error of *another* face's re-crop box (the
  re-crop errors below, shuffled with a fixed seed): errors of the same size that are not tied to
  this face's own prediction;
- ``recrop``: the box of the model's own first-pass points (a re-crop, upright, no averaging);

and, as users run it: ``recrop2`` (a re-crop of the re-crop), the default second look from the GT
box (``gt_second_look``) and, with ``--detector``, one pass and the default second look from the
detector's calibrated box. ``recrop - gt`` is what the box gave away; ``recrop - gt_moved`` is the
part that comes from the re-crop repeating the network's own mistake rather than from the box
error's size. Writes ``--out`` (JSON, NME % per row and per data folder, box error statistics).

    PYTHONPATH=src .venv/bin/python benchmarks/box_leak.py --data ../shared/data/lfpw_train \\
        --data ../shared/data/udacity_train --keys src/asmnet/models/default/val_keys.txt \\
        --model default --model paper224 --detector mtcnn
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine
from validation_set import run_reporting_errors, validation_faces

from asmnet.detection import make_detector
from asmnet.errors import ModelError, first_line
from asmnet.evaluation import reference_box
from asmnet.fileio import write_json_atomic
from asmnet.formats import key_folder
from asmnet.geometry import tight_box
from asmnet.inference import DEFAULT_REFINE, EARLY_STOP, align_faces
from asmnet.metrics import nme
from asmnet.runtime import load_model, resolve_model

SHUFFLE_SEED = 0


def square_boxes(centers: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Reference boxes (K, 4) whose centre and larger side are ``centers`` (K, 2) and ``sides`` (K,)."""
    half = sides[:, None] / 2.0
    return np.concatenate([centers - half, centers + half], axis=1)


def center_side(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (K, 2) and larger sides (K,) of boxes (K, 4)."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2.0, np.max(boxes[:, 2:] - boxes[:, :2], axis=1)


def box_error(boxes: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean centre error (% of the true box's side) and the side ratio's mean and spread."""
    (c, s), (c0, s0) = center_side(boxes), center_side(truth)
    ratio = s / s0
    return {"centre_error_pct": float(100 * np.mean(np.linalg.norm(c - c0, axis=1) / s0)),
            "side_ratio_mean": float(ratio.mean()), "side_ratio_sd": float(ratio.std())}


def measure(model_name: str, records: list, images: list[np.ndarray], detector) -> dict:
    """The rows of one model (see the module docstring)."""
    model = load_model(model_name, threads=1)  # ONNX for packages, PyTorch for a .pt checkpoint
    gt = np.stack([r.points for r in records])
    folders = np.array([key_folder(r.key) for r in records])
    owner = np.arange(len(images))
    gt_boxes = np.stack([tight_box(p) for p in gt])

    def one_pass(boxes: np.ndarray) -> np.ndarray:
        return align_faces(model, images, owner, boxes).landmarks

    rows: dict[str, np.ndarray] = {}
    first = one_pass(gt_boxes)
    rows["gt"] = nme(first, gt)
    recrop_boxes = np.stack([tight_box(p) for p in first])
    second = one_pass(recrop_boxes)
    rows["recrop"] = nme(second, gt)
    rows["recrop2"] = nme(one_pass(np.stack([tight_box(p) for p in second])), gt)
    # another face's re-crop error, in units of its own true box, applied to this face's true box
    (c, s), (c0, s0) = center_side(recrop_boxes), center_side(gt_boxes)
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(images))
    offset, ratio = ((c - c0) / s0[:, None])[order], (s / s0)[order]
    rows["gt_moved"] = nme(one_pass(square_boxes(c0 + offset * s0[:, None], s0 * ratio)), gt)
    second_look = {"refine": DEFAULT_REFINE, "straighten": True, "early_stop": EARLY_STOP}
    rows["gt_second_look"] = nme(align_faces(model, images, owner, gt_boxes, **second_look).landmarks, gt)
    misses, skipped = 0, None
    if detector is not None:
        try:
            model.info.calibrations.for_detector(detector, model.info.name)
        except ModelError as exc:  # e.g. a bare checkpoint: no detector rows for it
            skipped, detector = first_line(exc), None
            print(f"note: {model_name}: {skipped}; its detector rows are left out", file=sys.stderr)
    if detector is not None:
        boxes = [reference_box(r, im, model, detector) for r, im in zip(records, images)]
        found = np.array([b is not None for b in boxes])
        misses = int((~found).sum())
        det_boxes = np.stack([b for b in boxes if b is not None])
        kept = owner[found]
        imgs = [images[i] for i in kept]
        own = np.arange(len(imgs))
        rows[detector.name] = nme(align_faces(model, imgs, own, det_boxes).landmarks, gt[found])
        rows[f"{detector.name}_second_look"] = nme(
            align_faces(model, imgs, own, det_boxes, **second_look).landmarks, gt[found])
    out = {"model": str(resolve_model(model_name)), "faces": len(images), "detector_misses": misses,
           "detector_skipped": skipped,
           "recrop_box_error": box_error(recrop_boxes, gt_boxes), "nme": {}, "nme_per_folder": {}}
    for name, values in rows.items():
        out["nme"][name] = round(float(values.mean()), 4)
        if len(values) == len(images):
            out["nme_per_folder"][name] = {f: round(float(values[folders == f].mean()), 4) for f in sorted(set(folders))}
    out["box_gave_away"] = round(out["nme"]["recrop"] - out["nme"]["gt"], 4)
    out["own_mistake_repeated"] = round(out["nme"]["recrop"] - out["nme"]["gt_moved"], 4)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--keys", required=True)
    ap.add_argument("--model", action="append", default=[],
                    help="model name, package folder or .pt checkpoint; repeatable (default: default)")
    ap.add_argument("--detector", default=None, help="also run from this detector's boxes (e.g. mtcnn)")
    ap.add_argument("--out", default="benchmarks/results/box_leak.json")
    return run_reporting_errors(run, ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Measure every ``--model`` and write ``--out`` (see the module docstring)."""
    records, images = validation_faces(args.data, args.keys)
    detector = make_detector(args.detector) if args.detector else None
    results = []
    for name in args.model or ["default"]:
        t0 = time.time()
        result = measure(name, records, images, detector)
        results.append(result)
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in result["nme"].items())
              + f" ({time.time() - t0:.0f} s)", flush=True)
    write_json_atomic(Path(args.out), stamp({"keys": args.keys, "shuffle_seed": SHUFFLE_SEED,
                                             "detector": args.detector, "models": results}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
