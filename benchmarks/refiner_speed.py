"""What a model's refiner costs per face, one face at a time on one thread: the median-sized and
the largest validation faces of ``--data`` (the refiner's part networks run on more patches, and
on larger ones, for larger faces; the shape regression costs the same for every face).

    PYTHONPATH=src .venv/bin/python benchmarks/refiner_speed.py --data ../shared/data/helen_train \\
        --keys benchmarks/splits/val_keys_all.txt --model default --model accurate \\
        --out benchmarks/results/refiner_speed.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine
from validation_set import run_reporting_errors, validation_faces

from asmnet.fileio import write_json_atomic
from asmnet.metrics import normalising_distance
from asmnet.regions import load_refiner


def timed_refine(refiner, image: np.ndarray, points: np.ndarray, repeats: int) -> dict:
    """Median and 90th percentile (ms) of ``repeats`` refinements of one face (after a warm-up)."""
    owner = np.zeros(1, int)
    for _ in range(20):
        refiner.refine([image], owner, points, 1.0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        refiner.refine([image], owner, points, 1.0)
        times.append(1000 * (time.perf_counter() - t0))
    return {"median_ms": round(float(np.median(times)), 3), "p90_ms": round(float(np.quantile(times, 0.9)), 3)}


def run(args: argparse.Namespace) -> int:
    records, images = validation_faces(args.data, args.keys)
    points = np.stack([r.points for r in records])  # the annotation frames the patches (1-based pixels)
    iod = normalising_distance(points - 1)
    order = np.argsort(iod)
    picks = {"median face": int(order[len(order) // 2]), "largest face": int(order[-1])}
    rows = []
    for name in args.model:
        refiner = load_refiner(name)
        for label, k in picks.items():
            row = {"model": name, "face": label, "key": records[k].key, "eye_distance_px": round(float(iod[k]), 1),
                   **timed_refine(refiner, images[k], points[k:k + 1], args.repeats)}
            rows.append(row)
            print(f"{name} {label} (eyes {row['eye_distance_px']:.0f} px apart): median {row['median_ms']:.3f} ms, "
                  f"p90 {row['p90_ms']:.3f}", flush=True)
    write_json_atomic(Path(args.out), stamp({"keys": args.keys, "data": args.data, "rows": rows}))
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, metavar="DIR")
    ap.add_argument("--keys", required=True, help="the validation keys (benchmarks/splits/val_keys_all.txt)")
    ap.add_argument("--model", action="append", required=True, help="a model package with a refiner; repeatable")
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--out", default="benchmarks/results/refiner_speed.json")
    return run_reporting_errors(run, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
