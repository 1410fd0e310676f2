"""``asmnet predict``: images, folders, videos and webcams -> annotated pictures + JSON Lines.

Results stream to the JSON Lines file (or standard output: ``json_path="-"``) as they are made,
one record per image or frame (:mod:`asmnet.records`); the file is made at the first record, so a
run that writes none leaves none. With ``resume=True`` inputs already recorded there are skipped,
so an interrupted run over a huge folder loses nothing. ``workers > 1`` spreads decoding and
inference over processes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import cv2
from tqdm import tqdm

from ..api import AlignerSettings, FaceAligner
from ..errors import AsmnetError, DataError, ModelError, OutputError, shown
from ..fileio import check_writable_folder
from ..formats.image import max_pixels_limit
from ..formats.video import check_frame, open_video
from ..records import count, image_record, summary_lines
from .inputs import expand_inputs, input_key, output_paths, remove_stale_temporaries
from .local_engine import run_here, run_in_pool
from .record_sink import STDOUT, RecordSink, open_record_sink
from .units import named, one_line, predict_image

if TYPE_CHECKING:
    from .ray_engine import RayOptions


@dataclass
class PredictOptions(AlignerSettings):
    """How :func:`predict` runs: the aligner's settings (model, detector, second look, ...: the
    fields of :class:`asmnet.api.AlignerSettings`), the outputs, the engine and the video settings."""

    out_dir: str | None = None  # annotated images / videos
    json_path: str | None = None  # JSON Lines; "-": standard output
    workers: int = 1
    resume: bool = False
    redetect_every: int = 15  # video: the detector runs again after this many frames
    smooth: bool = True
    max_frames: int | None = None
    engine: str = "local"  # "local": processes of this machine (workers); "ray": a Ray cluster (ray_engine)
    ray: RayOptions | None = None  # cluster address and resources per actor (engine "ray"; None: defaults)


@dataclass
class PredictReport:
    """What :func:`predict` did: inputs done, inputs skipped (already in the ``resume`` output),
    one line per failed input, and the faces found and flagged in the records it wrote (a video
    counts the faces of each frame)."""

    done: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    faces: int = 0
    flagged: int = 0

    def count_faces(self, record: dict) -> None:
        """Add the faces of one written record (and those of them flagged) to the totals."""
        self.faces += len(record["faces"])
        self.flagged += sum(bool(f.get("flagged")) for f in record["faces"])


def _failed(report: PredictReport, line: str) -> None:
    """Record a failed input and say so at once (the list is printed again at the end)."""
    report.failures.append(line)
    tqdm.write(f"asmnet: failed: {line}", file=sys.stderr)


def shown_input(file: str) -> str:
    """A record's file as messages show it: relative to the working folder when inside it."""
    if not os.path.isabs(file):
        return shown(file)
    relative = os.path.relpath(file)
    return shown(file if relative.startswith(os.pardir) else relative)


def _show(show: TextIO | None, lines: list[str]) -> None:
    if show is not None:
        for line in lines:
            tqdm.write(line, file=show)


def run_images(images: list[Path], plan: dict[Path, Path], opts: PredictOptions, sink: RecordSink,
               report: PredictReport, done: set, show: TextIO | None = None) -> None:
    """Images one by one (or on ``opts.workers`` processes, or on Ray), each record to ``sink``
    and, in words, to ``show``; bad files go to ``report.failures``. Raises :class:`ModelError`
    when the model or detector is unusable."""
    tasks = []
    for p in images:
        if (input_key(p), None) in done:
            report.skipped += 1
            continue
        tasks.append((str(p), str(plan[p]) if p in plan else None))
    if not tasks:
        return
    # the model and detector load here first: a bad one stops the run with one line, before any
    # worker starts (in a pool every worker would fail the same way)
    aligner = FaceAligner.from_settings(opts, default_threads=1)
    aligner.detector  # noqa: B018 - builds the detector now, so that a bad name fails here
    bar = tqdm(total=len(tasks), desc="images", unit="img", file=sys.stderr, disable=None)
    if opts.engine == "ray":
        from .ray_engine import run_tasks

        del aligner
        results = run_tasks(tasks, opts.aligner_settings(), opts.ray, predict_image)
    elif opts.workers > 1:
        del aligner
        results = run_in_pool(tasks, predict_image, opts.aligner_settings(), opts.workers)
    else:
        cv2.setNumThreads(1)
        results = run_here(tasks, predict_image, aligner)
    try:
        _collect(results, sink, report, bar, show)
    finally:
        results.close()  # stops the pool, or the Ray job (and a local cluster it started), on an error too
        bar.close()


def _collect(results, sink: RecordSink, report: PredictReport, bar, show: TextIO | None) -> None:
    for _, record, error, fatal in results:
        if fatal:
            raise AsmnetError(fatal)
        if error:
            _failed(report, error)
        else:
            sink.write(record)
            report.done += 1
            report.count_faces(record)
            _show(show, summary_lines(record, shown_input(record["file"])))
        bar.update(1)


@contextmanager
def opencv_quiet() -> Iterator[None]:
    """Only OpenCV errors are logged inside (its warnings go straight to stderr otherwise)."""
    log = cv2.utils.logging
    before = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(before)


def run_video(source: str | int, opts: PredictOptions, sink: RecordSink, report: PredictReport, done: set,
              out_file: Path | None = None, show: TextIO | None = None) -> None:
    """Track faces through a video file or camera, writing one record per frame to ``sink`` and a
    line for the whole video to ``show``. A video that cannot be read, or stops early, is listed
    in ``report.failures``; the frames read are kept."""
    # FFmpeg prints its decoder complaints ("moov atom not found", ...) straight to stderr; the
    # one-line failure below says it better. Read once, when OpenCV first uses FFmpeg.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        _track(source, opts, sink, report, done, out_file, show)
    except (ModelError, OutputError):  # the model, or the JSON Lines output: every later video would fail too
        raise
    except AsmnetError as exc:
        _failed(report, named(str(source), exc))
    except cv2.error as exc:
        _failed(report, f"{shown(source)}: OpenCV failed ({one_line(exc)})")
    except OSError as exc:
        _failed(report, f"{shown(source)}: {exc.strerror or one_line(exc)}")


def _track(source: str | int, opts: PredictOptions, sink: RecordSink, report: PredictReport, done: set,
           out_file: Path | None, show: TextIO | None) -> None:
    from ..draw import draw_faces
    from ..video import FaceTracker

    name = shown(source)  # for messages; records keep the file's absolute path
    key = input_key(source) if isinstance(source, str) else None  # a camera's frames are never done
    with opencv_quiet():  # OpenCV's own "[ WARN ]" lines would precede the one-line failure
        cap = open_video(source)  # DataError: cannot be opened, or frames over the pixel limit
    try:
        aligner = FaceAligner.from_settings(opts)
    except BaseException:
        cap.release()
        raise
    tracker = FaceTracker(aligner, redetect_every=opts.redetect_every, smooth=opts.smooth)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    tmp_video = final_video = None
    if out_file is not None:
        final_video = out_file
        final_video.parent.mkdir(parents=True, exist_ok=True)
        tmp_video = final_video.with_name("." + final_video.name + ".part.mp4")
    bar = tqdm(total=total, desc=Path(name).name, unit="frame", file=sys.stderr, disable=None)
    frame_idx, t0 = 0, time.time()
    faces_before, flagged_before, tracks = report.faces, report.flagged, set()
    try:
        while opts.max_frames is None or frame_idx < opts.max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            check_frame(frame, source)
            tracked = tracker.update(frame, frame_idx / fps)
            faces = [t.face for t in tracked]
            if (key, frame_idx) not in done:
                record = image_record(source, frame_idx, (frame.shape[1], frame.shape[0]), faces,
                                      aligner.model.info.name, aligner.pixel_origin, track_ids=[t.id for t in tracked])
                sink.write(record)
                report.count_faces(record)
                tracks.update(record["track_ids"])
            if tmp_video is not None:
                if writer is None:
                    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        _failed(report, f"{final_video}: cannot write the annotated video (OpenCV's mp4v writer "
                                f"refused {frame.shape[1]}x{frame.shape[0]} frames: no encoder, or a size it cannot "
                                "take); the JSON records are written")
                        tmp_video = None
                if tmp_video is not None:
                    writer.write(draw_faces(frame, faces, pixel_origin=aligner.pixel_origin))
            frame_idx += 1
            bar.update(1)
            bar.set_postfix(fps=f"{frame_idx / max(1e-9, time.time() - t0):.1f}")
    finally:
        cap.release()
        bar.close()
        if writer is not None:
            writer.release()
            if tmp_video is not None and tmp_video.exists():
                os.replace(tmp_video, final_video)
    if frame_idx == 0:
        _failed(report, f"{name}: no frame could be decoded")
    else:
        report.done += 1
        if total and frame_idx < total and opts.max_frames is None:
            _failed(report, f"{name}: stopped at frame {frame_idx} of {total} (corrupt or truncated video; "
                    "the frames before are kept)")
        faces, flagged = report.faces - faces_before, report.flagged - flagged_before
        _show(show, [f"{shown_input(str(source)) if key else name}: {count(frame_idx, 'frame')}, "
                     f"{count(faces, 'face')} in all ({count(len(tracks), 'track')})"
                     + (f", {flagged} flagged" if flagged else "")])
        tqdm.write(f"{name}: {frame_idx} frames, {frame_idx / max(1e-9, time.time() - t0):.1f} frames/s, "
                   f"detector ran on {tracker.detector_runs} frames", file=sys.stderr)


def predict(inputs: list[str], opts: PredictOptions, webcam: int | None = None,
            show: TextIO | None = None) -> PredictReport:
    """Run the whole job and return a :class:`PredictReport`; a bad input is listed in its
    ``failures``, never raised. ``show``: where each image's faces (and each video's totals) are
    written in words, as they come (None: nowhere).

    Raises :class:`DataError` before any work when no input exists, when an output cannot be
    written, would overwrite an input or is an input folder, or when the ``resume`` file holds
    lines that are not records or records of another model or pixel origin; :class:`ModelError`
    when the model or detector cannot be loaded or outputs NaN; AsmnetError for ``resume``
    without a JSON Lines file (or with standard output)."""
    report = PredictReport()
    check_outputs(opts)
    max_pixels_limit()  # a bad $ASMNET_MAX_PIXELS fails here once, not for every image
    out_dir = Path(opts.out_dir) if opts.out_dir else None
    images, videos, errors = expand_inputs(inputs, skip=out_dir)
    if opts.engine != "local":
        from .ray_engine import check_job

        check_job(opts.engine, opts.workers, videos, webcam)  # before any output is opened or model loaded
    for e in errors:
        _failed(report, e)
    if not images and not videos and webcam is None:
        if not errors:
            raise DataError(None, "no images or videos found in the inputs")
        return report
    plan: dict[Path, Path] = {}
    if out_dir is not None:
        plan = output_paths(inputs, images, videos, out_dir)
        check_writable_folder(out_dir)
        remove_stale_temporaries(list(plan.values()))
    sink = open_record_sink(opts.json_path, opts.resume, opts, {input_key(p) for p in (*images, *videos)})
    try:
        run_images(images, plan, opts, sink, report, sink.existing.keys, show)
        for v in videos:
            run_video(str(v), opts, sink, report, sink.existing.keys, plan.get(v), show)
        if webcam is not None:
            run_video(webcam, opts, sink, report, sink.existing.keys, show=show)
    finally:
        sink.close()
    return report


def check_outputs(opts: PredictOptions) -> None:
    """AsmnetError, in one line, for output settings that cannot mean anything: an empty file or
    folder name, ``resume`` without a JSON Lines file, or with standard output."""
    if opts.json_path == "":
        raise AsmnetError("--json: an empty file name (give a file, or - for standard output)")
    if opts.out_dir == "":
        raise AsmnetError("--out: an empty folder name")
    if opts.resume and not opts.json_path:
        raise AsmnetError("--resume skips the inputs already in the --json file: give that --json file")
    if opts.resume and opts.json_path == STDOUT:
        raise AsmnetError("--resume reads the --json file back: it cannot resume standard output (--json -)")


def summary_line(report: PredictReport) -> str:
    """One line for the end of a run: inputs done, already there and failed, faces found and flagged."""
    return (f"asmnet: {report.done} done, {report.skipped} already in the output, "
            f"{len(report.failures)} failed; {count(report.faces, 'face')} found, {report.flagged} flagged")


__all__ = ["PredictOptions", "PredictReport", "check_outputs", "predict", "summary_line"]
