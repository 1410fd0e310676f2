"""CPU time of the landmark call on a large picture, RGB against BGR input (issue 13.6).

    python benchmarks/large_image.py [--size 4000x3000] [--repeats 20] [--out benchmarks/results/large_image.json]

The face box is given (``boxes=``), so this times what the aligner does around the network: the
image conversion and the crop. CPU time of this process (``time.process_time``) with one thread
for OpenCV and ONNX Runtime, so other processes on the machine do not change it.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine

from asmnet import FaceAligner
from asmnet.benchmark import cpu_name
from asmnet.fileio import write_json_atomic


def cpu_ms(fn, repeats: int) -> float:
    """Median CPU milliseconds of ``fn`` over ``repeats`` calls (after two warm-up calls)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000.0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    box = [(width / 2 - 200, height / 2 - 200, width / 2 + 200, height / 2 + 200)]
    aligner = FaceAligner(threads=1)
    results = {
        "rgb_ms": cpu_ms(lambda: aligner(rgb, boxes=box, channel_order="rgb"), args.repeats),
        "bgr_ms": cpu_ms(lambda: aligner(bgr, boxes=box, channel_order="bgr"), args.repeats),
        "network_ms": cpu_ms(lambda: aligner.model.run(np.zeros((1, 128, 128, 3), np.uint8)), args.repeats),
    }
    report = {"image": f"{width}x{height}", "cpu": cpu_name(), "clock": "process_time, 1 thread", **results}
    print(json.dumps(report, indent=1))
    if args.out:
        write_json_atomic(args.out, stamp(report))


if __name__ == "__main__":
    main()
