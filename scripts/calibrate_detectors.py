#!/usr/bin/env python
"""Fit each face detector's box calibration on training faces; measure misses and speed on validation.

    python scripts/calibrate_detectors.py DATA_DIR [DATA_DIR ...] --out calib.json \\
        [--group-pattern REGEX] [--val-fraction 0.12] [--detectors dlib-hog dlib-cnn:max_faces=300]

The faces are split exactly as the trainer splits them (asmnet.training.split.split_keys with the
same fraction, group pattern and seed); the calibration is fitted on the TRAINING faces only, and
the validation faces only measure it: miss rate per data folder, IoU of the calibrated box with
the tight box of the ground-truth points, and milliseconds per image.

A detector spec is NAME[:key=value,...]; keys are the detector's options (e.g. ``upsample=0``)
plus ``max_faces`` / ``max_val_faces`` (a deterministic subsample: the faces whose key hashes
lowest) and ``as=KEY`` (the name of its entry in the output). For Udacity frames pass the clip
pattern the trainer uses: --group-pattern '^(?:testcsv_)?([A-Za-z][A-Za-z_.'"'"'-]*_\\d)\\d$'.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from asmnet.detection import (
    BoxCalibration,
    Detection,
    FaceDetector,
    available_detectors,
    box_iou,
    fit_calibration,
    make_detector,
    match_detection,
    to_reference_box,
)
from asmnet.errors import AsmnetError, DataError
from asmnet.fileio import write_json_atomic
from asmnet.formats import FaceRecord, key_folder, load_many, read_image
from asmnet.geometry import tight_box
from asmnet.training.split import split_keys


def parse_spec(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """"name:key=value,..." -> (entry name, detector options, run options)."""
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    run: dict[str, Any] = {"as": name}
    for item in filter(None, rest.split(",")):
        key, eq, text = item.partition("=")
        if not eq:
            raise SystemExit(f"bad detector option {item!r} in {spec!r} (expected key=value)")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        (run if key in ("max_faces", "max_val_faces", "as") else options)[key.strip()] = value
    return name, options, run


def subsample(indices: list[int], keys: list[str], limit: int | None) -> list[int]:
    """At most ``limit`` of ``indices``: those whose key hashes lowest (deterministic), in key order."""
    if limit is None or limit >= len(indices):
        return list(indices)
    ranked = sorted(indices, key=lambda i: hashlib.sha1(keys[i].encode()).hexdigest())
    return sorted(ranked[:limit], key=lambda i: keys[i])


def run_detector(
    detector: FaceDetector, faces: list[FaceRecord], desc: str
) -> tuple[list[Detection | None], list[float], list[int]]:
    """Per face: the matched detection (None: missed), ms per image, number of unmatched detections."""
    matched: list[Detection | None] = []
    times: list[float] = []
    extra: list[int] = []
    for face in tqdm(faces, desc=desc, unit="img", dynamic_ncols=True, mininterval=2.0):
        try:
            image = read_image(face.image)
        except DataError as exc:
            tqdm.write(f"skipped: {exc}")
            matched.append(None)
            extra.append(0)
            continue
        start = time.perf_counter()
        detections = detector.detect(image)
        times.append((time.perf_counter() - start) * 1000.0)
        best = match_detection(detections, face.points)
        matched.append(best)
        extra.append(len(detections) - (best is not None))
    return matched, times, extra


def calibrated_quality(
    matched: list[Detection | None], faces: list[FaceRecord], calibration: BoxCalibration
) -> dict[str, float]:
    """How well calibrated boxes stand for the tight boxes of the faces that were found."""
    ious, centre_err, size_ratio = [], [], []
    for det, face in zip(matched, faces):
        if det is None:
            continue
        ref = to_reference_box(det, calibration)
        gt = tight_box(face.points)
        gt_size = max(gt[2] - gt[0], gt[3] - gt[1])
        ious.append(box_iou(ref, gt))
        centre_err.append(float(np.hypot(*((ref[:2] + ref[2:]) / 2 - (gt[:2] + gt[2:]) / 2))) / gt_size)
        size_ratio.append(max(ref[2] - ref[0], ref[3] - ref[1]) / gt_size)
    if not ious:
        return {}
    return {
        "iou_median": round(float(np.median(ious)), 4),
        "iou_p10": round(float(np.percentile(ious, 10)), 4),
        "centre_error_median": round(float(np.median(centre_err)), 4),
        "size_ratio_p10_p90": [round(float(np.percentile(size_ratio, q)), 4) for q in (10, 90)],
    }


def miss_stats(matched: list[Detection | None], faces: list[FaceRecord], extra: list[int]) -> dict[str, Any]:
    """n, miss rate and false alarms (unmatched detections per image), overall and per data folder."""
    per: dict[str, list[bool]] = defaultdict(list)
    for det, face in zip(matched, faces):
        per[key_folder(face.key)].append(det is None)
    n = len(faces)
    return {
        "n": n,
        "miss_rate": round(sum(d is None for d in matched) / n, 4) if n else None,
        "extra_per_image": round(float(np.mean(extra)), 4) if n else None,
        "per_folder": {f: {"n": len(m), "miss_rate": round(sum(m) / len(m), 4)} for f, m in sorted(per.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", type=Path, help="data folders (300W layout) or other load_faces sources")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--detectors", nargs="+", default=None,
                        help="detector specs NAME[:key=value,...] (default: every available one)")
    parser.add_argument("--group-pattern", default=None, help="regex whose group 1 is a stem's group (as in training)")
    parser.add_argument("--val-fraction", type=float, default=0.12)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--max-faces", type=int, default=None, help="deterministic subsample of training faces")
    parser.add_argument("--max-val-faces", type=int, default=None, help="deterministic subsample of validation faces")
    parser.add_argument("--merge", action="store_true", help="keep the other entries of an existing --out file")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    try:
        records, errors = load_many(args.data)
    except AsmnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for err in errors:
        print(f"skipped: {err}", file=sys.stderr)
    keys = [r.key for r in records]
    train_idx, val_idx, split = split_keys(keys, args.val_fraction, args.group_pattern, args.split_seed)
    print(f"{len(records)} faces: {len(train_idx)} training (calibration), {len(val_idx)} validation "
          f"({split['n_val_groups']} groups)")

    specs = args.detectors or [n for n, why in available_detectors().items() if why == "ok"]
    result: dict[str, Any] = {}
    if args.merge and args.out.is_file():
        result = json.loads(args.out.read_text(encoding="utf-8"))
    result["_about"] = {
        "what": "face detector box -> tight box of the 68 points (asmnet.detection.BoxCalibration)",
        "data": [Path(d).name for d in args.data],
        "split": {k: split[k] for k in ("fraction", "group_pattern", "split_seed", "n_train", "n_val")},
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
                   f"OpenCV {cv2.__version__}",
    }
    for spec in specs:
        name, options, run = parse_spec(spec)
        try:
            detector = make_detector(name, **options)
        except (AsmnetError, ValueError) as exc:
            print(f"{spec}: not available: {exc}", file=sys.stderr)
            continue
        train = subsample(train_idx, keys, run.get("max_faces", args.max_faces))
        val = subsample(val_idx, keys, run.get("max_val_faces", args.max_val_faces))
        train_faces = [records[i] for i in train]
        val_faces = [records[i] for i in val]
        matched_t, times_t, extra_t = run_detector(detector, train_faces, f"{spec} train")
        matched_v, times_v, extra_v = run_detector(detector, val_faces, f"{spec} val")
        try:
            calibration = fit_calibration(matched_t, [f.points for f in train_faces])
        except DataError as exc:
            print(f"{spec}: {exc}", file=sys.stderr)
            continue
        times = np.asarray(times_t + times_v)
        entry = {
            "detector": name,
            "options": detector.options(),
            "calibration": {k: round(v, 5) if isinstance(v, float) else v for k, v in calibration.to_dict().items()},
            "train": {**miss_stats(matched_t, train_faces, extra_t),
                      **calibrated_quality(matched_t, train_faces, calibration)},
            "val": {**miss_stats(matched_v, val_faces, extra_v),
                    **calibrated_quality(matched_v, val_faces, calibration)},
            "ms_median": round(float(np.median(times)), 2),
            "ms_p90": round(float(np.percentile(times, 90)), 2),
            "ms_n_images": int(times.size),
        }
        result[run["as"]] = entry
        print(f"{run['as']}: {json.dumps(entry)}")
        write_json_atomic(args.out, result)
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
