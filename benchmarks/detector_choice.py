"""The measurements behind the default face detector and each detector's default score threshold.

For each detector spec (NAME[:key=value;...], values JSON, e.g. ``mtcnn:thresholds=[0.6,0.7,0.5]``
run with a low last threshold so that higher ones can be read off the recorded scores):

* every face crop of the data folders: is the face found (a detection with IoU >= 0.3 with the
  tight box of its points), the found detection's score, the scores of the other detections; miss
  rates per folder and on the validation keys, for a sweep of score thresholds;
* pictures without faces or with one (skimage.data coffee, chelsea, rocket: 0 faces; astronaut: 1):
  detections per threshold;
* in-plane rotation: the validation faces rotated by 0 / 30 / 45 degrees, hit rate;
* CPU milliseconds per image at 640x480 and 1280x720 (one thread, ``time.thread_time``, median
  of ``--repeats``; the astronaut resized), so the numbers hold on a shared machine.

    python benchmarks/detector_choice.py --data ../shared/data/lfpw_train --data ../shared/data/udacity_train \\
        --keys src/asmnet/models/default/val_keys.txt --out benchmarks/results/detector_choice.json \\
        --detectors "mtcnn:thresholds=[0.6,0.7,0.5]" dlib-hog
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine
from tqdm import tqdm

from asmnet.detection import make_detector, match_detection
from asmnet.evaluation import read_keys
from asmnet.fileio import write_json_atomic
from asmnet.formats import key_folder, load_many, read_image

THRESHOLDS = {
    "mtcnn": [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99],
    "dlib-hog": [-0.6, -0.4, -0.2, 0.0, 0.2, 0.3, 0.4, 0.6],
}


def parse_spec(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(";")):
        key, _, text = item.partition("=")
        options[key] = json.loads(text)
    return name, options


def rotate(image: np.ndarray, points: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The image rotated about its centre (same size, borders replicated) and its points likewise."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, points @ matrix[:, :2].T + matrix[:, 2]


def cpu_ms(detector, image: np.ndarray, repeats: int) -> float:
    detector.detect(image)
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        detector.detect(image)
        times.append((time.thread_time() - start) * 1000)
    return round(float(np.median(times)), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--keys", required=True, help="validation keys")
    ap.add_argument("--detectors", nargs="+", required=True)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--max-faces", type=int, default=None, help="every n-th face only (quick runs)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    from skimage import data as skdata

    records, _ = load_many(args.data)
    if args.max_faces:
        records = records[:: max(1, len(records) // args.max_faces)]
    val_keys = read_keys(args.keys)
    pictures = {name: np.ascontiguousarray(getattr(skdata, name)()[:, :, ::-1]) for name in ("coffee", "chelsea", "rocket", "astronaut")}
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    result["_about"] = {"data": [Path(d).name for d in args.data], "faces": len(records),
                        "machine": f"{platform.machine()}, Python {platform.python_version()}, OpenCV {cv2.__version__}",
                        "timing": "CPU ms per image, one thread (time.thread_time), median; astronaut resized"}
    for spec in args.detectors:
        name, options = parse_spec(spec)
        detector = make_detector(name, **options)
        faces = []
        for rec in tqdm(records, desc=spec, mininterval=5):
            image = read_image(rec.image)
            dets = detector.detect(image)
            found = match_detection(dets, rec.points)
            faces.append({"folder": key_folder(rec.key), "val": rec.key in val_keys,
                          "score": None if found is None else found.score,
                          "others": [d.score for d in dets if d is not found]})
        rotation = {}
        val_records = [r for r in records if r.key in val_keys]
        for degrees in (0, 30, 45):
            hits = 0
            for rec in val_records:
                image, points = rotate(read_image(rec.image), rec.points, degrees)
                hits += match_detection(detector.detect(image), points) is not None
            rotation[str(degrees)] = round(100 * hits / max(1, len(val_records)), 2)
        picture_scores = {k: [round(d.score, 4) for d in detector.detect(v)] for k, v in pictures.items()}
        astronaut = pictures["astronaut"]
        speed = {f"{w}x{h}": cpu_ms(detector, cv2.resize(astronaut, (w, h)), args.repeats) for w, h in ((640, 480), (1280, 720))}
        sweep = {}
        for t in THRESHOLDS.get(name, [None]):
            def miss(sel, t=t, faces=faces):
                chosen = [f for f in faces if sel(f)]
                missed = sum(f["score"] is None or (t is not None and f["score"] < t) for f in chosen)
                return round(100 * missed / max(1, len(chosen)), 2)
            extra = np.mean([sum(s >= t for s in f["others"]) if t is not None else len(f["others"]) for f in faces])
            sweep[str(t)] = {
                "miss_lfpw_all": miss(lambda f: f["folder"] == "lfpw_train"),
                "miss_udacity_all": miss(lambda f: f["folder"] == "udacity_train"),
                "miss_val": miss(lambda f: f["val"]),
                "extra_per_image": round(float(extra), 4),
                "picture_faces": {k: sum(s >= t for s in v) if t is not None else len(v) for k, v in picture_scores.items()},
            }
        result[spec] = {"options": detector.options(), "n_faces": len(faces), "n_val": sum(f["val"] for f in faces),
                        "by_threshold": sweep, "picture_scores": picture_scores,
                        "rotation_hit_rate_val": rotation, "cpu_ms": speed}
        print(spec, json.dumps({k: v for k, v in result[spec].items() if k != "by_threshold"}))
        for t, row in sweep.items():
            print(f"  threshold {t}: {json.dumps(row)}")
        write_json_atomic(out_path, stamp(result))


if __name__ == "__main__":
    main()
