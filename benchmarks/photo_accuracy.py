"""The accuracy scoreboard: NME per source (LFPW, HELEN, AFW, Udacity), with the ground-truth box
and with MTCNN + the default second look, for one or more models on the same validation faces.

Two protocols per model:

- ``gt``: one pass from the tight box of the ground-truth points (the published protocol; it leaks
  part of the answer, see ``box_leak.py``);
- ``mtcnn``: MTCNN's box, calibrated to the model, then the default second look (what users get).
  A face MTCNN misses is counted in ``misses`` and left out of that row.

Per protocol: NME mean per data folder, over the photos (every folder but ``udacity_train``) and
over all faces, FR@10, NME per face region on the photos (``Markup.regions``) and the mean signed
vertical error in % of the inter-ocular distance (positive: points below the annotation). Pose MAE
(GT box) against the ``pose.csv`` labels. Writes ``--out`` (JSON) and prints one table row per
model and protocol. A model package with a refiner (``accurate``: part networks + shape regression;
``default``: shape regression) gets the rows ``gt+regions`` and ``mtcnn+regions`` after it (the
plain rows are the network's own). Choose recipes by the ``mtcnn`` photo number; report both.

    PYTHONPATH=src .venv/bin/python benchmarks/photo_accuracy.py --data ../shared/data/lfpw_train \\
        --data ../shared/data/helen_train --data ../shared/data/afw --data ../shared/data/udacity_train \\
        --keys benchmarks/splits/val_keys_all.txt --model default --out benchmarks/results/photo_accuracy.json
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
from asmnet.evaluation import reference_box
from asmnet.fileio import write_json_atomic
from asmnet.formats import key_folder
from asmnet.geometry import tight_box
from asmnet.inference import DEFAULT_REFINE, EARLY_STOP, align_faces
from asmnet.markup import markup_for
from asmnet.metrics import failure_rate, nme, normalising_distance, pose_mae
from asmnet.regions import RegionRefiner, load_refiner
from asmnet.runtime import load_model, resolve_model

VIDEO_FOLDERS = ("udacity_train",)  # everything else counts as a photo
SECOND_LOOK = {"refine": DEFAULT_REFINE, "straighten": True, "early_stop": EARLY_STOP}


def protocol_row(pred: np.ndarray, gt: np.ndarray, folders: np.ndarray) -> dict:
    """NME summaries of predictions ``pred`` against ``gt`` (K, N, 2) of faces from ``folders``."""
    markup = markup_for(gt.shape[1])
    per_face = nme(pred, gt)
    photos = ~np.isin(folders, VIDEO_FOLDERS)
    norm = normalising_distance(gt, markup)
    point_err = np.linalg.norm(pred - gt, axis=2) / norm[:, None] * 100
    row = {
        "faces": len(per_face),
        "nme": round(float(per_face.mean()), 4),
        "nme_per_folder": {f: round(float(per_face[folders == f].mean()), 4) for f in sorted(set(folders))},
        "fr_10": round(failure_rate(per_face, 10.0), 3),
    }
    if photos.any():
        row["nme_photos"] = round(float(per_face[photos].mean()), 4)
        row["fr_10_photos"] = round(failure_rate(per_face[photos], 10.0), 3)
        row["photo_regions"] = {name: round(float(point_err[photos][:, list(idx)].mean()), 3)
                                for name, idx in markup.regions}
        dy = (pred[photos, :, 1] - gt[photos, :, 1]) / norm[photos, None] * 100
        row["photo_vertical_bias_pct"] = round(float(dy.mean()), 3)
    return row


def measure(model_name: str, records: list, images: list[np.ndarray], detector, flip_tta: bool = False,
            refiner: RegionRefiner | None = None) -> dict:
    """Both protocols of one model (see the module docstring); with ``refiner``, each also after
    the region refiner (rows ``gt+regions``, ``<detector>+regions``; ``refiner_ms_per_face``)."""
    model = load_model(model_name, threads=1)
    gt = np.stack([r.points for r in records])
    folders = np.array([key_folder(r.key) for r in records])
    owner = np.arange(len(images))
    first = align_faces(model, images, owner, np.stack([tight_box(p) for p in gt]), flip_tta=flip_tta)
    out = {"model": str(resolve_model(model_name)), "flip_tta": flip_tta,
           "gt": protocol_row(first.landmarks, gt, folders)}
    labelled = np.array([r.pose is not None for r in records])
    if labelled.any():
        truth = np.stack([r.pose for r, ok in zip(records, labelled) if ok])
        out["gt"]["pose_mae"] = {k: round(v, 3) for k, v in pose_mae(first.pose[labelled], truth).items()}
    boxes = [reference_box(r, im, model, detector) for r, im in zip(records, images)]
    found = np.array([b is not None for b in boxes])
    kept = owner[found]
    result = align_faces(model, [images[i] for i in kept], np.arange(len(kept)),
                         np.stack([b for b in boxes if b is not None]), flip_tta=flip_tta, **SECOND_LOOK)
    out[detector.name] = protocol_row(result.landmarks, gt[found], folders[found])
    out[detector.name]["misses"] = int((~found).sum())
    if refiner is not None:
        origin = model.info.label_origin
        out["gt+regions"] = protocol_row(refiner.refine(images, owner, first.landmarks, origin), gt, folders)
        t0 = time.perf_counter()
        refined = refiner.refine([images[i] for i in kept], np.arange(len(kept)), result.landmarks, origin)
        out["refiner_ms_per_face"] = round(1000 * (time.perf_counter() - t0) / max(1, len(kept)), 3)
        out[f"{detector.name}+regions"] = protocol_row(refined, gt[found], folders[found])
        out["refiner"] = str(refiner.folder)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, metavar="DIR")
    ap.add_argument("--keys", required=True, help="the validation keys (benchmarks/splits/val_keys_all.txt)")
    ap.add_argument("--model", action="append", default=[],
                    help="model name or package folder; repeatable (default: default)")
    ap.add_argument("--detector", default="mtcnn")
    ap.add_argument("--flip-tta", action="store_true", help="every pass also on the mirrored crop (2x network time)")
    ap.add_argument("--refiner", default=None, metavar="DIR",
                    help="score the points after this refiner (a refiner/ folder, one thread) instead of each "
                    "model package's own")
    ap.add_argument("--out", default="benchmarks/results/photo_accuracy.json")
    return run_reporting_errors(run, ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Measure every ``--model`` and write ``--out``."""
    records, images = validation_faces(args.data, args.keys)
    detector = make_detector(args.detector)
    results = []
    for name in args.model or ["default"]:
        t0 = time.time()
        # the package's own refiner (part networks and / or shape regression) unless --refiner names one
        refiner = RegionRefiner(args.refiner) if args.refiner else load_refiner(name, required=False)
        result = measure(name, records, images, detector, args.flip_tta, refiner)
        results.append(result)
        for proto in ("gt", detector.name, "gt+regions", f"{detector.name}+regions"):
            if proto not in result:
                continue
            row = result[proto]
            folders = " ".join(f"{f.split('_')[0]} {v:.3f}" for f, v in row["nme_per_folder"].items())
            print(f"{name} {proto}: photos {row.get('nme_photos', float('nan')):.3f}, all {row['nme']:.3f} "
                  f"({folders}), FR@10 {row['fr_10']:.2f}%", flush=True)
        print(f"  ({time.time() - t0:.0f} s)")
    write_json_atomic(Path(args.out), stamp({"keys": args.keys, "data": args.data, "detector": args.detector,
                                             "second_look": SECOND_LOOK, "models": results}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
