"""``asmnet predict``: images, folders, videos and webcams -> annotated pictures + JSON Lines.

Results stream to the JSON Lines file as they are made (one record per image or frame); with
``resume=True`` inputs already recorded there are skipped, so an interrupted run over a huge
folder loses nothing. ``workers > 1`` spreads decoding and inference over processes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
from tqdm import tqdm

from .errors import AsmnetError, DataError
from .formats import IMAGE_EXTENSIONS, read_image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass
class PredictOptions:
    model: str | None = None
    detector: str = "auto"
    backend: str = "auto"
    threads: int | None = None
    out_dir: str | None = None  # annotated images / videos
    json_path: str | None = None  # JSON Lines
    workers: int = 1
    resume: bool = False
    redetect_every: int = 15  # video: the detector runs again after this many frames
    smooth: bool = True
    max_frames: int | None = None


@dataclass
class PredictReport:
    done: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[Path], list[str]]:
    """Images (folders searched recursively, sorted), videos, and errors for missing paths."""
    images, videos, errors = [], [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif path.is_file():
            (videos if path.suffix.lower() in VIDEO_EXTENSIONS else images).append(path)
        else:
            errors.append(f"{path}: no such file or folder")
    return images, videos, errors


def image_record(path: str, frame: int | None, shape: tuple[int, ...], faces: list, model: str, **extra) -> dict:
    return {"file": path, "frame": frame, "image_size": [int(shape[1]), int(shape[0])], "model": model,
            "faces": [f.to_dict() for f in faces], **extra}


def done_inputs(json_path: Path) -> set[tuple[str, int | None]]:
    """(file, frame) pairs already in a JSON Lines file; a half-written last line is dropped."""
    if not json_path.exists():
        return set()
    good, done = [], set()
    for line in json_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            done.add((rec["file"], rec.get("frame")))
            good.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # interrupted write
    from .fileio import write_text_atomic

    write_text_atomic(json_path, "".join(g + "\n" for g in good))
    return done


def annotated_path(out_dir: Path, path: Path, roots: list[Path]) -> Path:
    for root in roots:
        try:
            return out_dir / path.relative_to(root).with_suffix(".jpg")
        except ValueError:
            continue
    return out_dir / (path.stem + ".jpg")


# -- per-process state for worker pools ------------------------------------------------------
_ALIGNER = None


def _init_worker(opts: PredictOptions) -> None:
    global _ALIGNER
    cv2.setNumThreads(1)
    from .api import FaceAligner

    _ALIGNER = FaceAligner(opts.model, detector=opts.detector, backend=opts.backend, threads=opts.threads or 1)


def _process_image(task: tuple[str, str | None]) -> tuple[dict | None, str | None]:
    path, out_file = task
    try:
        image = read_image(path)
        faces = _ALIGNER(image, channel_order="bgr")
        if out_file:
            from .draw import draw_faces
            from .fileio import write_atomic

            Path(out_file).parent.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".jpg", draw_faces(image, faces), [cv2.IMWRITE_JPEG_QUALITY, 92])
            write_atomic(out_file, lambda p: p.write_bytes(buf.tobytes()))
        return image_record(path, None, image.shape, faces, _ALIGNER.model.info.name), None
    except AsmnetError as exc:
        return None, str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
    except cv2.error as exc:
        return None, f"{path}: OpenCV failed ({str(exc).strip().splitlines()[-1][:120]})"


def _write(sink: TextIO | None, record: dict) -> None:
    if sink is not None:
        sink.write(json.dumps(record) + "\n")
        sink.flush()


def run_images(images: list[Path], roots: list[Path], opts: PredictOptions, sink, report: PredictReport,
               done: set) -> None:
    out_dir = Path(opts.out_dir) if opts.out_dir else None
    tasks = []
    for p in images:
        if (str(p), None) in done:
            report.skipped += 1
            continue
        tasks.append((str(p), str(annotated_path(out_dir, p, roots)) if out_dir else None))
    if not tasks:
        return
    bar = tqdm(total=len(tasks), desc="images", unit="img", file=sys.stderr, disable=None)
    if opts.workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no inherited thread pools
        with ctx.Pool(opts.workers, initializer=_init_worker, initargs=(opts,)) as pool:
            results: Iterator = pool.imap_unordered(_process_image, tasks, chunksize=8)
            _collect(results, sink, report, bar)
    else:
        _init_worker(opts)
        _collect(map(_process_image, tasks), sink, report, bar)
    bar.close()


def _collect(results, sink, report: PredictReport, bar) -> None:
    for record, error in results:
        if error:
            report.failures.append(error)
            tqdm.write(f"asmnet: failed: {error}", file=sys.stderr)
        else:
            _write(sink, record)
            report.done += 1
        bar.update(1)


def run_video(source: str | int, opts: PredictOptions, sink, report: PredictReport, done: set) -> None:
    """Track faces through a video file or camera, writing one record per frame."""
    from .api import FaceAligner
    from .draw import draw_faces
    from .video import FaceTracker

    name = str(source)
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        report.failures.append(f"{name}: cannot open video")
        return
    aligner = FaceAligner(opts.model, detector=opts.detector, backend=opts.backend, threads=opts.threads)
    tracker = FaceTracker(aligner, redetect_every=opts.redetect_every, smooth=opts.smooth)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    tmp_video = final_video = None
    if opts.out_dir and isinstance(source, str):
        final_video = Path(opts.out_dir) / (Path(source).stem + "_annotated.mp4")
        final_video.parent.mkdir(parents=True, exist_ok=True)
        tmp_video = final_video.with_name("." + final_video.name + ".part.mp4")
    bar = tqdm(total=total, desc=Path(name).name, unit="frame", file=sys.stderr, disable=None)
    frame_idx, t0 = 0, time.time()
    try:
        while opts.max_frames is None or frame_idx < opts.max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            tracked = tracker.update(frame, frame_idx / fps)
            faces = [t.face for t in tracked]
            if (name, frame_idx) not in done:
                _write(sink, image_record(name, frame_idx, frame.shape, faces, aligner.model.info.name,
                                          track_ids=[t.id for t in tracked]))
            if tmp_video is not None:
                if writer is None:
                    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (frame.shape[1], frame.shape[0]))
                writer.write(draw_faces(frame, faces))
            frame_idx += 1
            bar.update(1)
            bar.set_postfix(fps=f"{frame_idx / max(1e-9, time.time() - t0):.1f}")
    finally:
        cap.release()
        bar.close()
        if writer is not None:
            writer.release()
            os.replace(tmp_video, final_video)
    if frame_idx == 0:
        report.failures.append(f"{name}: no frame could be decoded")
    else:
        report.done += 1
        if total and frame_idx < total and opts.max_frames is None:
            report.failures.append(f"{name}: stopped at frame {frame_idx} of {total} (corrupt or truncated video)")
        tqdm.write(f"{name}: {frame_idx} frames, {frame_idx / max(1e-9, time.time() - t0):.1f} frames/s, "
                   f"detector ran on {tracker.detector_runs} frames", file=sys.stderr)


def predict(inputs: list[str], opts: PredictOptions, webcam: int | None = None) -> PredictReport:
    """Run the whole job; failures are collected in the report, never raised per file."""
    report = PredictReport()
    images, videos, errors = expand_inputs(inputs)
    report.failures += errors
    for e in errors:
        print(f"asmnet: failed: {e}", file=sys.stderr)
    if not images and not videos and webcam is None:
        if not errors:
            raise DataError(None, "no images or videos found in the inputs")
        return report
    done = done_inputs(Path(opts.json_path)) if opts.resume and opts.json_path else set()
    sink = open(opts.json_path, "a" if opts.resume else "w", encoding="utf-8") if opts.json_path else None
    try:
        roots = [Path(i) for i in inputs if Path(i).is_dir()]
        run_images(images, roots, opts, sink, report, done)
        for v in videos:
            run_video(str(v), opts, sink, report, done)
        if webcam is not None:
            run_video(webcam, opts, sink, report, done)
    finally:
        if sink is not None:
            sink.close()
    return report


def summary_line(report: PredictReport) -> str:
    return (f"asmnet: {report.done} done, {report.skipped} already in the output, "
            f"{len(report.failures)} failed")


__all__ = ["PredictOptions", "PredictReport", "expand_inputs", "predict"]
