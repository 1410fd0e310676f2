"""`asmnet benchmark`'s measurements: every stage reported, the video line included."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from asmnet.benchmark import benchmark, format_report
from asmnet.runtime import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")


def test_benchmark_reports_detector_landmarks_pipeline_and_video():
    data = pytest.importorskip("skimage.data", reason="scikit-image (the demo extra) gives the test picture")
    image = np.ascontiguousarray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    rep = benchmark(image, backends=("onnx",), batches=(1,), min_seconds=0.01)
    assert rep["detector"]["median_ms"] > 0 and rep["landmarks"][0]["median_ms"] > 0
    assert rep["pipeline"] and all(r["median_ms"] > 0 for r in rep["pipeline"])
    video = rep["video"]
    assert [r["threads"] for r in video] == [r["threads"] for r in rep["pipeline"]]
    for frame, whole in zip(video, rep["pipeline"]):
        # a tracked frame skips the detector on 29 frames of 30: cheaper than a photo
        assert 0 < frame["median_ms"] < whole["median_ms"] and frame["redetect_every"] == 30
    text = format_report(rep)
    assert "video, per frame" in text and "whole pipeline" in text
