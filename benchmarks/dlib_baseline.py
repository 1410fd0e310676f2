"""dlib's 68-point shape predictor measured on asmnet's own validation split.

The validation faces are exactly those the trainer holds out (``split_keys`` over the records of
all ``--data`` folders, concatenated in the order given). Two protocols:

* **detector** (protocol A): dlib's HOG frontal face detector (upsample 1) on the stored image; the
  detection that overlaps the ground-truth tight box best (IoU >= 0.3) is kept, otherwise the face
  is a miss. The shape predictor runs on that detection. NME is reported over detected faces,
  together with the miss rate.
* **gt_box** (protocol B): the tight box of the ground-truth points is mapped to dlib's box
  convention (centre shift and scale fitted on the TRAINING faces' matched detections: medians of
  (det_centre - gt_centre) / gt_size per axis and of det_size / gt_size, size = larger side), and
  the predictor runs on that square box. No misses; comparable to asmnet's ground-truth-box crops.

Points are compared as written in the .pts files (no 1-px shift). The mean signed offset of
dlib's predictions against the ground truth is reported per folder, with the NME after removing it.

Everything runs in one thread; timings wrap the predictor call (per face) and the detector call
(per image) with ``time.perf_counter``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine

from asmnet.detection import box_iou
from asmnet.errors import DataError
from asmnet.fileio import write_json_atomic
from asmnet.formats import FaceRecord, key_folder, load_many, read_image
from asmnet.geometry import box_center_size, tight_box
from asmnet.metrics import nme, plot_ced, summarize
from asmnet.training.split import split_keys

IOU_MIN = 0.3
UPSAMPLE = 1
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
PROTOCOLS = ("detector", "gt_box")


@dataclass
class Face:
    """One face with everything measured on it."""

    record: FaceRecord
    folder: str
    is_val: bool
    det_box: np.ndarray | None = None  # matched detection (x1, y1, x2, y2) as dlib gives it
    det_ms: float | None = None
    pred: dict[str, np.ndarray] = field(default_factory=dict)  # protocol -> (68, 2)
    pred_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class BoxMapping:
    """GT tight box -> dlib box: centre shift and side, as fractions of the GT box's larger side."""

    dx: float
    dy: float
    scale: float
    n_fit: int

    def apply(self, gt_box: np.ndarray) -> np.ndarray:
        """The square dlib-style box (x1, y1, x2, y2) for a ground-truth tight box."""
        centre, size = box_center_size(gt_box)
        cx, cy = centre[0] + self.dx * size, centre[1] + self.dy * size
        half = self.scale * size / 2.0
        return np.array([cx - half, cy - half, cx + half, cy + half])


def predictor_path() -> Path:
    """dlib's 68-point model inside the face_recognition_models package (not imported)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise SystemExit("face_recognition_models is not installed (it holds dlib's model files)")
    path = Path(spec.origin).parent / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise SystemExit(f"missing {path}")
    return path


def rect_to_box(rect) -> np.ndarray:
    """dlib rectangle -> float (left, top, right, bottom)."""
    return np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64)


def box_to_rect(box: np.ndarray):
    """(x1, y1, x2, y2) -> dlib rectangle with rounded corners (the inverse of rect_to_box)."""
    import dlib

    x1, y1, x2, y2 = (int(np.rint(v)) for v in box)
    return dlib.rectangle(x1, y1, x2, y2)


def load_records(folders: list[str]) -> tuple[list[FaceRecord], list[str]]:
    """Records of all folders in the order given (as the trainer concatenates them)."""
    records, errors = load_many(folders, n_points=68)
    for err in errors:
        print(f"skipped: {err}", file=sys.stderr)
    return records, [key_folder(r.key) for r in records]


def detect(detector, face: Face, image: np.ndarray) -> None:
    """Run the detector on the face's image and keep the detection that matches its GT box."""
    start = time.perf_counter()
    rects = detector(image, UPSAMPLE)
    face.det_ms = (time.perf_counter() - start) * 1e3
    gt = tight_box(face.record.points)
    best, best_iou = None, IOU_MIN
    for rect in rects:
        box = rect_to_box(rect)
        overlap = box_iou(box, gt)
        if overlap >= best_iou:
            best, best_iou = box, overlap
    face.det_box = best


def fit_mapping(faces: list[Face]) -> BoxMapping:
    """Median centre shift and scale of matched detections relative to the GT tight box."""
    rows = []
    for face in faces:
        if face.det_box is None:
            continue
        gt_c, gt_s = box_center_size(tight_box(face.record.points))
        det_c, det_s = box_center_size(face.det_box)
        rows.append(((det_c[0] - gt_c[0]) / gt_s, (det_c[1] - gt_c[1]) / gt_s, det_s / gt_s))
    if not rows:
        raise SystemExit("no training face was detected: cannot fit the box mapping")
    med = np.median(np.array(rows), axis=0)
    return BoxMapping(float(med[0]), float(med[1]), float(med[2]), len(rows))


def predict(predictor, face: Face, image: np.ndarray, protocol: str, box: np.ndarray) -> None:
    """Run the shape predictor in ``box``; store the 68 points and the call's duration."""
    rect = box_to_rect(box)
    start = time.perf_counter()
    shape = predictor(image, rect)
    face.pred_ms[protocol] = (time.perf_counter() - start) * 1e3
    face.pred[protocol] = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def stacked(faces: list[Face], protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and ground truth (B, 68, 2) of the faces that have a ``protocol`` prediction."""
    done = [f for f in faces if protocol in f.pred]
    return np.stack([f.pred[protocol] for f in done]), np.stack([f.record.points for f in done])


def ms_stats(values: list[float]) -> dict:
    """Median, p90 and mean of durations in milliseconds."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"n": 0}
    return {"n": int(arr.size), "median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)),
            "mean": float(arr.mean())}


def mean_offset(faces: list[Face], protocol: str) -> dict:
    """Signed offset pred - gt over the faces predicted with ``protocol``: mean over all points,
    and the median over faces of each face's mean offset (robust to catastrophic failures)."""
    done = [f for f in faces if protocol in f.pred]
    if not done:
        return {"n": 0}
    per_face = np.stack([(f.pred[protocol] - f.record.points).mean(axis=0) for f in done])
    mean, median = per_face.mean(axis=0), np.median(per_face, axis=0)
    return {"n": len(done), "dx": float(mean[0]), "dy": float(mean[1]),
            "median_dx": float(median[0]), "median_dy": float(median[1])}


def offset_block(val: list[Face], train: list[Face], protocol: str) -> dict:
    """Offsets on validation and training faces, and the validation NME with a constant offset
    removed: the validation faces' own mean offset, or the training faces' (no peeking)."""
    block = {"val": mean_offset(val, protocol), "train": mean_offset(train, protocol)}
    done = [f for f in val if protocol in f.pred]
    if not done:
        return block
    pred, gt = stacked(done, protocol)
    block["nme_mean"] = float(nme(pred, gt).mean())
    for source in ("val", "train"):
        if block[source]["n"]:
            shift = np.array([block[source]["dx"], block[source]["dy"]])
            corrected = nme(pred - shift, gt)
            block[f"nme_mean_{source}_offset_removed"] = float(corrected.mean())
            block[f"nme_median_{source}_offset_removed"] = float(np.median(corrected))
    return block


YAW_BINS = ((0.0, 15.0), (15.0, 30.0), (30.0, 90.0))


def yaw_block(faces: list[Face], protocol: str) -> dict:
    """NME mean / median and FR@10 % per |yaw| bin (pose.csv pseudo-labels), plus misses."""
    out = {}
    for lo, hi in YAW_BINS:
        group = [f for f in faces if f.record.pose is not None and lo <= abs(f.record.pose[0]) < hi]
        done = [f for f in group if protocol in f.pred]
        row: dict = {"n_faces": len(group), "n_missed": len(group) - len(done)}
        if done:
            values = nme(*stacked(done, protocol))
            row.update({"nme_mean": float(values.mean()), "nme_median": float(np.median(values)),
                        "fr_0.10": float(np.mean(values > 10.0) * 100.0)})
        out[f"{lo:g}-{hi:g}"] = row
    return out


def summary_block(faces: list[Face], protocol: str) -> dict:
    """asmnet.metrics.summarize over the faces that have a prediction, plus miss rate and timings."""
    done = [f for f in faces if protocol in f.pred]
    block: dict = {"n_faces": len(faces), "n_missed": len(faces) - len(done),
                   "miss_rate": 100.0 * (len(faces) - len(done)) / max(1, len(faces))}
    if done:
        values = nme(*stacked(done, protocol))
        full = summarize(values, [f.record.key for f in done])
        block.update({k: v for k, v in full.items() if k not in ("per_image", "pose_mae", "pose_n")})
    block["predictor_ms"] = ms_stats([f.pred_ms[protocol] for f in done])
    if protocol == "detector":
        block["detector_ms_per_image"] = ms_stats([f.det_ms for f in faces if f.det_ms is not None])
    return block


def per_image(faces: list[Face], protocol: str) -> dict[str, float | None]:
    """key -> NME in percent (None for a detector miss)."""
    out: dict[str, float | None] = {}
    for face in faces:
        pred = face.pred.get(protocol)
        out[face.record.key] = None if pred is None else float(nme(pred, face.record.points)[0])
    return out


def rgb_image(record: FaceRecord) -> np.ndarray:
    """The face's image as contiguous RGB uint8 (dlib's channel order)."""
    return np.ascontiguousarray(read_image(record.image)[:, :, ::-1])


def run(args: argparse.Namespace) -> dict:
    """The whole benchmark; returns the JSON-ready result."""
    import dlib

    cv2.setNumThreads(1)
    records, folders = load_records(args.data)
    _, val_list, split = split_keys([r.key for r in records], args.val_fraction, args.group_pattern,
                                    args.split_seed)
    val_set = set(val_list)
    faces = [Face(record, folder, i in val_set) for i, (record, folder) in enumerate(zip(records, folders))]
    train = [f for f in faces if not f.is_val]
    val = [f for f in faces if f.is_val]
    print(f"{len(train)} training faces (mapping fit), {len(val)} validation faces "
          f"{split['n_val_per_folder']}", file=sys.stderr)

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path()))
    predictor(rgb_image(val[0].record), box_to_rect(tight_box(val[0].record.points)))  # warm-up

    started = time.perf_counter()
    unreadable: list[str] = []
    for n, face in enumerate(faces, 1):
        try:
            detect(detector, face, rgb_image(face.record))
        except DataError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            unreadable.append(face.record.key)
        if n % 500 == 0:
            print(f"  detected {n}/{len(faces)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    mapping = fit_mapping(train)
    mapping_per_folder = {name: vars(fit_mapping([f for f in train if f.folder == name]))
                          for name in dict.fromkeys(f.folder for f in train)}

    skipped = set(unreadable)
    faces = [f for f in faces if f.record.key not in skipped]
    train = [f for f in faces if not f.is_val]
    val = [f for f in faces if f.is_val]
    for face in faces:
        image = rgb_image(face.record)
        if face.det_box is not None:
            predict(predictor, face, image, "detector", face.det_box)
        predict(predictor, face, image, "gt_box", mapping.apply(tight_box(face.record.points)))

    groups = {name: [f for f in val if f.folder == name] for name in dict.fromkeys(folders)}
    groups["overall"] = val
    train_groups = {name: [f for f in train if f.folder == name] for name in dict.fromkeys(folders)}
    return {
        "benchmark": "dlib 68-point shape predictor on asmnet's validation split",
        "config": {"data": [str(d) for d in args.data], "val_fraction": args.val_fraction,
                   "group_pattern": args.group_pattern, "split_seed": args.split_seed,
                   "dlib_version": dlib.__version__, "predictor": PREDICTOR_FILE,
                   "detector": "dlib.get_frontal_face_detector (HOG)", "upsample": UPSAMPLE,
                   "iou_min": IOU_MIN, "nme": "inter-ocular (outer eye corners), percent",
                   "points": "as written in the .pts files (no 1-px shift)", "threads": 1},
        "split": {k: v for k, v in split.items() if k != "val_keys"},
        "unreadable": unreadable,
        "mapping": {**vars(mapping), "per_folder": mapping_per_folder,
                    "note": "dlib box = square, centre gt_centre + (dx, dy) * gt_size, side scale * gt_size"},
        "results": {p: {name: summary_block(group, p) for name, group in groups.items()} for p in PROTOCOLS},
        "by_abs_yaw": {p: {name: yaw_block(group, p) for name, group in groups.items()} for p in PROTOCOLS},
        "offsets": {p: {name: offset_block(group, train_groups.get(name, train), p)
                        for name, group in groups.items()} for p in PROTOCOLS},
        "per_image": {p: per_image(val, p) for p in PROTOCOLS},
    }


def print_table(result: dict) -> None:
    """Compact table: one row per protocol and folder."""
    head = (f"{'protocol':9} {'folder':14} {'n':>4} {'miss%':>6} {'NME':>6} {'med':>6} {'FR@8':>6} "
            f"{'FR@10':>6} {'AUC8':>6} {'pred ms':>8} {'p90':>6} {'det ms':>7}")
    print(head)
    print("-" * len(head))
    for protocol, groups in result["results"].items():
        for name, b in groups.items():
            det = b.get("detector_ms_per_image", {}).get("median")
            det_text = f"{det:7.1f}" if det is not None else f"{'-':>7}"
            print(f"{protocol:9} {name:14} {b.get('n', 0):4d} {b['miss_rate']:6.1f} "
                  f"{b.get('nme_mean', 0):6.2f} {b.get('nme_median', 0):6.2f} "
                  f"{b.get('fr_0.08', 0):6.1f} {b.get('fr_0.10', 0):6.1f} "
                  f"{b.get('auc_0.08', 0):6.3f} {b['predictor_ms'].get('median', 0):8.2f} "
                  f"{b['predictor_ms'].get('p90', 0):6.2f} {det_text}")
    m = result["mapping"]
    print(f"\nmapping (fit on {m['n_fit']} detected training faces): dx {m['dx']:+.4f}, dy {m['dy']:+.4f}, "
          f"scale {m['scale']:.4f} (x GT tight-box side)")
    print("signed offset pred - GT in px (val mean / val median per face / train mean) and validation "
          "NME mean with a constant offset removed (val offset / train offset):")
    for protocol, groups in result["offsets"].items():
        for name, o in groups.items():
            v, t = o["val"], o["train"]
            if v.get("n") and t.get("n"):
                print(f"  {protocol:9} {name:14} ({v['dx']:+.2f}, {v['dy']:+.2f}) / ({v['median_dx']:+.2f}, "
                      f"{v['median_dy']:+.2f}) / ({t['dx']:+.2f}, {t['dy']:+.2f})  "
                      f"NME {o['nme_mean']:.2f} -> {o['nme_mean_val_offset_removed']:.2f} / "
                      f"{o['nme_mean_train_offset_removed']:.2f}")
    print("NME mean (FR@10 %) by |yaw| bin on validation:")
    for protocol, groups in result["by_abs_yaw"].items():
        for name, bins in groups.items():
            if not any(r["n_faces"] for r in bins.values()):
                continue
            cells = [f"{b}: {r.get('nme_mean', float('nan')):.2f} ({r.get('fr_0.10', float('nan')):.0f}%, "
                     f"n={r['n_faces']})" for b, r in bins.items()]
            print(f"  {protocol:9} {name:14} " + "  ".join(cells))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True,
                        help="face folder (repeatable; the order must match the trainer's)")
    parser.add_argument("--val-fraction", type=float, default=0.12)
    parser.add_argument("--group-pattern", default=None, help="regex whose group 1 is a face's split group")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="results JSON")
    parser.add_argument("--ced", type=Path, default=None, help="optional CED plot (PNG)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    result = run(args)
    write_json_atomic(args.out, stamp(result))
    print_table(result)
    if args.ced is not None:
        curves = {}
        for protocol, values in result["per_image"].items():
            kept = [v for v in values.values() if v is not None]
            if kept:
                curves[f"dlib {protocol}"] = np.array(kept)
        plot_ced(curves, args.ced, max_percent=10.0, title="dlib 68-point predictor, validation faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
