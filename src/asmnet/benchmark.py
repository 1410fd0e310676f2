"""``asmnet benchmark``: milliseconds per face for the detector, the landmark + pose stage and the
whole pipeline, per backend, thread count and batch size, on a real face image."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn: Callable[[], object], per: int = 1, warmup: int = 10, min_runs: int = 30,
          min_seconds: float = 1.0) -> dict[str, float]:
    """Median and p90 milliseconds of ``fn`` divided by ``per`` (faces per call)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0 / per)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "runs": len(times)}


def benchmark(image_bgr: np.ndarray, model: str | None = None, detector: str = "auto",
              backends: tuple[str, ...] = ("onnx", "torch"), batches: tuple[int, ...] = (1, 8),
              min_seconds: float = 1.0, detector_options: dict | None = None) -> dict:
    """Measure every combination; backends that are not installed are reported as skipped.
    ``detector_options`` are make_detector keywords (e.g. ``min_face``)."""
    from .api import FaceAligner
    from .inference import crop_faces
    from .runtime import load_model

    default_threads = os.cpu_count() or 1
    aligner = FaceAligner(model, detector=detector, threads=1, **(detector_options or {}))
    dets = aligner.detector.detect(image_bgr)
    if not dets:
        raise ModelError(None, "no face found in the benchmark image: pass --image with a face")
    face = aligner(image_bgr, channel_order="bgr")[0]
    ref = np.array([face.landmarks[:, 0].min(), face.landmarks[:, 1].min(),
                    face.landmarks[:, 0].max(), face.landmarks[:, 1].max()])
    info = aligner.model.info
    crops, _ = crop_faces(image_bgr, ref[None], info)
    out = {"cpu": cpu_name(), "cores": default_threads, "model": info.name, "input_size": info.input_size,
           "image_size": [int(image_bgr.shape[1]), int(image_bgr.shape[0])], "faces": len(dets),
           "detector": {"name": aligner.detector.name,
                        **timed(lambda: aligner.detector.detect(image_bgr), min_seconds=min_seconds)},
           "landmarks": [], "pipeline": []}
    if aligner.refiner is not None:  # the package's refiner: its own stage after the landmarks
        points = face.landmarks[None]
        out["refiner"] = timed(lambda: aligner.refiner.refine([image_bgr], np.zeros(1, int), points, aligner.pixel_origin),
                               min_seconds=min_seconds)
    for backend in backends:
        for threads in sorted({1, default_threads}):
            try:
                m = load_model(model, backend=backend, threads=threads)
            except ModelError as exc:
                out["landmarks"].append({"backend": backend, "threads": threads, "skipped": str(exc)})
                continue
            for batch in batches:
                batch_crops = np.repeat(crops, batch, axis=0)
                out["landmarks"].append({"backend": backend, "threads": threads, "batch": batch,
                                         **timed(lambda m=m, c=batch_crops: m.run(c), per=batch,
                                                 min_seconds=min_seconds)})
            if backend == backends[0]:
                a = FaceAligner(model, detector=aligner.detector, backend=backend, threads=threads)
                out["pipeline"].append({"backend": backend, "threads": threads,
                                        **timed(lambda a=a: a(image_bgr, channel_order="bgr"),
                                                min_seconds=min_seconds)})
                out.setdefault("video", []).append({"backend": backend, "threads": threads,
                                                    **_video_timing(a, image_bgr, min_seconds)})
    return out


def _video_timing(aligner: Any, frame: np.ndarray, min_seconds: float, redetect_every: int = 30) -> dict:
    """Per-frame time of :class:`asmnet.FaceTracker` following the face of ``frame`` shown again and
    again (a still 30 fps video): the detector runs on one frame in ``redetect_every``, the other
    frames crop from the previous landmarks. Median over whole detection cycles, so it is the
    average cost of a frame, not that of the cheap frames only."""
    from .video import FaceTracker

    tracker = FaceTracker(aligner, redetect_every=redetect_every)
    clock = iter(range(10**9))

    def cycle() -> None:
        for _ in range(redetect_every):
            tracker.update(frame, next(clock) / 30.0)

    res = timed(cycle, per=redetect_every, warmup=1, min_runs=3, min_seconds=min_seconds)
    return {**res, "redetect_every": redetect_every}


def format_report(rep: dict) -> str:
    lines = [f"CPU: {rep['cpu']} ({rep['cores']} cores); model {rep['model']} at {rep['input_size']} px; "
             f"image {rep['image_size'][0]}x{rep['image_size'][1]}",
             f"detector {rep['detector']['name']}: median {rep['detector']['median_ms']:.2f} ms, "
             f"p90 {rep['detector']['p90_ms']:.2f} ms per image",
             "landmark + pose stage (ms per face):",
             f"  {'backend':8} {'threads':>7} {'batch':>5} {'median':>8} {'p90':>8}"]
    for r in rep["landmarks"]:
        if "skipped" in r:
            lines.append(f"  {r['backend']:8} {r['threads']:>7}  skipped: {r['skipped']}")
        else:
            lines.append(f"  {r['backend']:8} {r['threads']:>7} {r['batch']:>5} {r['median_ms']:>8.3f} {r['p90_ms']:>8.3f}")
    if rep.get("refiner"):
        lines.append(f"refiner (part networks and / or shape regression, 1 thread, ms per face): median "
                     f"{rep['refiner']['median_ms']:.3f}, p90 {rep['refiner']['p90_ms']:.3f}")
    faces = rep.get("faces", 1)
    lines.append(f"whole pipeline, the image with its {faces} face{'s' if faces != 1 else ''} (detector + landmarks), ms:")
    for r in rep["pipeline"]:
        lines.append(f"  {r['backend']:8} {r['threads']:>7} threads: median {r['median_ms']:.2f}, p90 {r['p90_ms']:.2f}")
    if rep.get("video"):
        every = rep["video"][0]["redetect_every"]
        lines.append(f"video, per frame (FaceTracker on the image as a still video; detector 1 frame in {every}), ms:")
        for r in rep["video"]:
            lines.append(f"  {r['backend']:8} {r['threads']:>7} threads: median {r['median_ms']:.2f}, p90 {r['p90_ms']:.2f}")
    return "\n".join(lines)
