"""Face detectors on whole pictures with several faces of different sizes.

The data here are face crops, so this builds "photos": each collage is a 1280x720 grey-noise
canvas holding 6 validation faces pasted at face sizes from 40 to 200 px (deterministic). It then
reports, per detector, the miss rate (no detection with IoU >= 0.3 with a pasted face's tight box),
false detections per collage, and the CPU time per collage (one thread).

    python benchmarks/detector_collages.py --data ../shared/data/lfpw_train --data ../shared/data/udacity_train \
        --keys src/asmnet/models/default/val_keys.txt --out benchmarks/results/detector_collages.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine

from asmnet.detection import available_detectors, box_iou, make_detector
from asmnet.evaluation import read_keys
from asmnet.formats import load_faces, read_image
from asmnet.geometry import tight_box

CANVAS = (720, 1280)
FACE_SIZES = (40, 60, 80, 110, 150, 200)


def make_collage(records, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Paste one face per size into a noisy canvas (a 3x2 grid with jitter); returns image and GT boxes."""
    h, w = CANVAS
    canvas = rng.integers(60, 160, size=(h, w, 3), dtype=np.uint8)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 8)
    boxes = []
    cells = [(r, c) for r in range(2) for c in range(3)]
    for (r, c), size, rec in zip(cells, FACE_SIZES, records):
        img = read_image(rec.image)
        box = tight_box(rec.points)
        k = size / max(box[2] - box[0], box[3] - box[1])
        small = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        sh, sw = small.shape[:2]
        cx = int(c * w / 3 + w / 6 + rng.integers(-40, 40))
        cy = int(r * h / 2 + h / 4 + rng.integers(-30, 30))
        x0, y0 = max(0, min(w - sw, cx - sw // 2)), max(0, min(h - sh, cy - sh // 2))
        canvas[y0:y0 + sh, x0:x0 + sw] = small[: h - y0, : w - x0]
        boxes.append(box * k + [x0, y0, x0, y0])
    return canvas, boxes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--keys", required=True, help="validation keys (the faces to paste)")
    ap.add_argument("--collages", type=int, default=20)
    ap.add_argument("--detectors", nargs="+", default=["mtcnn", "dlib-hog", "dlib-hog:upsample=0", "dlib-cnn"],
                    help="specs NAME[:key=value;...] (values JSON, e.g. 'mtcnn:thresholds=[0.6,0.7,0.9]')")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    keys = read_keys(args.keys)
    records = [r for d in args.data for r in load_faces(d)[0] if r.key in keys]
    rng = np.random.default_rng(0)
    collages = []
    for _ in range(args.collages):
        chosen = [records[i] for i in rng.choice(len(records), size=len(FACE_SIZES), replace=False)]
        collages.append(make_collage(chosen, rng))
    ok = available_detectors()
    results = {}
    for spec in args.detectors:
        name, _, opts = spec.partition(":")
        if ok.get(name) != "ok":
            results[spec] = {"skipped": ok.get(name, "unknown")}
            continue
        kwargs = {k: json.loads(v) for k, v in (o.split("=", 1) for o in opts.split(";") if o)}
        det = make_detector(name, **kwargs)
        missed = np.zeros(len(FACE_SIZES))
        false, times = 0, []
        for image, boxes in collages:
            t0 = time.thread_time()  # CPU time of this thread: holds on a shared machine (one thread)
            dets = det.detect(image)
            times.append((time.thread_time() - t0) * 1000)
            used = set()
            for j, gt in enumerate(boxes):
                ious = [box_iou(d.box, gt) for d in dets]
                best = int(np.argmax(ious)) if ious else -1
                if best < 0 or ious[best] < 0.3:
                    missed[j] += 1
                else:
                    used.add(best)
            false += len(dets) - len(used)
        n = len(collages)
        results[spec] = {
            "miss_rate": float(missed.sum() / (n * len(FACE_SIZES)) * 100),
            "miss_rate_by_face_size": {str(s): float(m / n * 100) for s, m in zip(FACE_SIZES, missed)},
            "false_per_collage": false / n,
            "ms_median": float(np.median(times)), "ms_p90": float(np.percentile(times, 90)),
        }
        print(spec, json.dumps(results[spec]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(stamp({"canvas": CANVAS, "face_sizes": FACE_SIZES, "collages": args.collages,
                                                "results": results}), indent=1) + "\n")


if __name__ == "__main__":
    main()
