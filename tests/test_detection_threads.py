"""Detectors shared between threads (issue 14.1): one FaceAligner, 8 threads, same faces as one thread.

Each check runs in a subprocess: before the fix, dlib's HOG detector shared by 8 threads corrupted
the heap and killed the process, which must fail this test rather than kill pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from asmnet.detection import available_detectors

SCRIPT = textwrap.dedent("""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from skimage import data

    from asmnet import FaceAligner

    aligner = FaceAligner(detector=sys.argv[1], threads=1)
    base = np.ascontiguousarray(data.astronaut())
    images = [base, base[::-1, ::-1].copy(), np.ascontiguousarray(base[40:, 60:]), base[::2, ::2].copy()]

    def run(image):
        return [(f.box.round(3).tolist(), round(f.score, 4), f.landmarks.round(3).tolist()) for f in aligner(image)]

    expected = [run(image) for image in images]
    assert any(expected), "no face found at all: the comparison would prove nothing"
    jobs = [i % len(images) for i in range(48)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: run(images[i]), jobs))
    wrong = sum(result != expected[i] for result, i in zip(results, jobs))
    print(f"{len(jobs)} calls from 8 threads, {wrong} differ from the sequential result")
    sys.exit(1 if wrong else 0)
""")


@pytest.mark.parametrize("detector", ["dlib-hog", "auto"])
def test_one_aligner_shared_by_eight_threads(detector: str) -> None:
    pytest.importorskip("skimage", reason="the test picture is skimage's astronaut (pip install scikit-image)")
    if detector != "auto" and available_detectors().get(detector) != "ok":
        pytest.skip(f"{detector}: {available_detectors().get(detector)}")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, detector], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode} (negative: killed by a signal)\n{proc.stdout}{proc.stderr[-2000:]}"
    assert "0 differ" in proc.stdout
