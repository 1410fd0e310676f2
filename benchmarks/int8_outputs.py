"""INT8 against float32: validation NME, points stuck on one value, pose steps, CPU time per face.

    python benchmarks/int8_outputs.py --data ../shared/data/lfpw_train --data ../shared/data/udacity_train \
        --keys src/asmnet/models/default/val_keys.txt \
        --model default=src/asmnet/models/default --model default-fp32=src/asmnet/models/default-fp32 \
        --float default=default-fp32 --json benchmarks/results/int8.json

Each ``--model NAME=DIR`` is measured on the validation faces (ground-truth box protocol):
NME, pose MAE, faces with >= 3 points on exactly one x or y value ("stuck"; a float network
never repeats a value), faces whose >= 3 outermost points share the face's extreme x or y
("clamped"), the number of distinct yaw/pitch/roll values and the smallest step between them,
and on skimage's camera photo the x of jaw points 0-4. ``--float NAME=REF`` adds the differences
to the float model REF. CPU time: the calling thread's CPU time per face on one ONNX Runtime
thread, all models timed in alternation so that they share the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine

from asmnet.evaluation import evaluate, read_keys
from asmnet.fileio import write_json_atomic
from asmnet.formats import load_many, read_image
from asmnet.geometry import tight_box
from asmnet.inference import align_boxes, crop_faces, predict_crops, units_to_image
from asmnet.runtime import load_model

CAMERA_BOX = [215.5, 129.5, 268.5, 182.5]  # the face box dlib-hog finds on skimage.data.camera()


def stuck_faces(points: np.ndarray, min_points: int = 3) -> tuple[list[int], list[int]]:
    """Indices of faces with >= min_points points on one exact x or y value, and of those where
    that value is the face's extreme x or y (what a clamped output looks like)."""
    stuck, clamped = [], []
    for i, p in enumerate(points):
        hit = edge = False
        for axis in (0, 1):
            values, counts = np.unique(p[:, axis], return_counts=True)
            hit |= bool((counts >= min_points).any())
            edge |= bool(counts[0] >= min_points or counts[-1] >= min_points)
        if hit:
            stuck.append(i)
        if edge:
            clamped.append(i)
    return stuck, clamped


def outputs(model, records) -> tuple[np.ndarray, np.ndarray]:
    """Image-space points (K, N, 2) and pose (K, 3) of the records' faces (GT boxes)."""
    crops, mats = [], []
    for r in records:
        c, m = crop_faces(read_image(r.image), tight_box(r.points)[None], model.info)
        crops.append(c[0])
        mats.append(m[0])
    units, pose, _ = predict_crops(model, np.stack(crops), 32)
    return units_to_image(units, np.stack(mats), model.info), pose


def cpu_ms_per_face(models: dict, rounds: int = 15, calls: int = 40) -> dict:
    """Median over alternating rounds of the CPU ms per face, one thread, batch 1 and 8."""
    times = {name: {1: [], 8: []} for name in models}
    crops = {name: np.random.default_rng(0).integers(0, 255, (8, m.info.input_size, m.info.input_size, 3),
                                                     dtype=np.uint8) for name, m in models.items()}
    for name, m in models.items():
        for _ in range(20):
            m.run(crops[name][:1])
    for _ in range(rounds):
        for name, m in models.items():
            for batch in (1, 8):
                n = calls if batch == 1 else calls // 8
                t0 = time.thread_time()
                for _ in range(n):
                    m.run(crops[name][:batch])
                times[name][batch].append((time.thread_time() - t0) * 1000 / (n * batch))
    return {name: {f"batch_{b}": float(np.median(v)) for b, v in t.items()} for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--keys", required=True, help="validation keys (val_keys.txt)")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--float", action="append", default=[], metavar="NAME=REF", help="compare NAME with float model REF")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    keys = read_keys(args.keys)
    records = [r for r in load_many(args.data)[0] if r.key in keys]
    paths = dict(m.split("=", 1) for m in args.model)
    models = {name: load_model(path, backend="onnx", threads=1) for name, path in paths.items()}
    from skimage import data as skdata

    camera = np.ascontiguousarray(np.stack([skdata.camera()] * 3, -1))
    results, raw = {}, {}
    for name, model in models.items():
        res = evaluate(model, records, progress=False).to_dict()
        points, pose = raw[name] = outputs(model, records)
        stuck, clamped = stuck_faces(points)
        jaw = align_boxes(model, camera, np.array([CAMERA_BOX]))[0][0, :5, 0]
        udacity = [i for i, r in enumerate(records) if r.key.startswith("udacity_train")]
        results[name] = {
            "path": paths[name], "faces": len(records), "nme_mean": res["nme_mean"], "pose_mae": res["pose_mae"],
            "faces_with_3_points_on_one_value": len(stuck),
            "udacity_faces_with_3_points_on_one_value": len(set(stuck) & set(udacity)),
            "faces_with_3_points_on_their_extreme_value": len(clamped),
            "pose_distinct_values": [len(np.unique(pose[:, j])) for j in range(3)],
            "pose_smallest_step_deg": [float(np.diff(np.unique(pose[:, j])).min()) for j in range(3)],
            "camera_jaw_0_4_x": [round(float(x), 2) for x in jaw],
        }
    for pair in args.float:
        name, ref = pair.split("=", 1)
        (p, q), (fp, fq) = raw[name], raw[ref]
        results[name]["vs_float"] = {
            "float_model": ref, "nme_minus_float": results[name]["nme_mean"] - results[ref]["nme_mean"],
            "point_px_diff_mean": float(np.abs(p - fp).mean()), "point_px_diff_max": float(np.abs(p - fp).max()),
            "pose_diff_max_deg": np.abs(q - fq).max(0).tolist(),
        }
    load = os.getloadavg()[0]
    speed = cpu_ms_per_face(models)
    for name in models:
        results[name]["cpu_ms_per_face_1_thread"] = speed[name]
    out = {"what": __doc__.splitlines()[0], "load_average_while_timing": load, "models": results}
    print(json.dumps(out, indent=1))
    if args.json:
        write_json_atomic(args.json, stamp(out))


if __name__ == "__main__":
    main()
