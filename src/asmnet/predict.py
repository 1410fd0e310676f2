"""``asmnet predict``: images, folders, videos and webcams -> annotated pictures + JSON Lines.

Results stream to the JSON Lines file as they are made (one record per image or frame); with
``resume=True`` inputs already recorded there are skipped, so an interrupted run over a huge
folder loses nothing. ``workers > 1`` spreads decoding and inference over processes.
"""

from __future__ import annotations

import errno
import json
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

from .errors import AsmnetError, DataError, ModelError, OutputError, shown
from .fileio import check_writable_folder, json_text
from .formats import IMAGE_EXTENSIONS
from .formats.image import max_pixels_limit, read_image_reduced
from .inference import DEFAULT_REFINE

if TYPE_CHECKING:
    from .ray_engine import RayOptions

# errors writing an output that every later output would meet too: the run stops at once
STOPPING_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass
class PredictOptions:
    """How :func:`predict` runs: the model and detector, the outputs, and the video settings."""

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
    min_score: float | None = None  # drop detections scoring below this
    flip_tta: bool = False  # average with the mirrored face (2x network time)
    engine: str = "local"  # "local": processes of this machine (workers); "ray": a Ray cluster (ray_engine)
    ray: RayOptions | None = None  # cluster address and resources per actor (engine "ray"; None: defaults)
    pixel_origin: float = 0.0  # the first pixel's centre in the output coordinates (0: OpenCV, 1: iBUG .pts)
    detector_options: dict = field(default_factory=dict)  # make_detector keywords (model_path, min_face, upsample)
    refine: int = DEFAULT_REFINE  # second-look passes from the predicted points (FaceAligner's refine)
    straighten: bool = True  # second look: turn the crop upright
    rotation_search: bool = False  # no face upright: search the image turned by 90/180/270 degrees
    early_stop: bool = True  # second look: stop after one re-crop that moved the face little (FaceAligner's)


@dataclass
class PredictReport:
    """What :func:`predict` did: inputs done, inputs skipped (already in the ``resume`` output) and
    one line per failed input."""

    done: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)


def expand_inputs(
    inputs: list[str], skip: Path | None = None
) -> tuple[list[Path], list[Path], list[str]]:
    """Images (folders searched recursively, sorted), videos, and errors for missing paths and
    broken links. Each file comes once, under its first spelling, however many inputs name it
    (``coll coll/in``, ``a.jpg ./a.jpg``, links); files under ``skip`` (the output folder) are left out."""
    images, videos, errors = [], [], []
    seen: set[str] = set()
    skip_real = os.path.realpath(skip) if skip is not None else None

    def add(path: Path, video: bool) -> None:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            (videos if video else images).append(path)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # an output folder inside this one holds annotated copies, not inputs (the output
            # folder *being* this one is refused by output_paths)
            own = skip_real if skip_real is not None and skip_real != os.path.realpath(path) else None
            for p in sorted(path.rglob("*")):
                if p.suffix.lower() not in IMAGE_EXTENSIONS or (own and _inside(os.path.realpath(p), own)):
                    continue
                if p.is_file():
                    add(p, False)
                elif p.is_symlink() and not p.exists():
                    errors.append(f"{shown(p)}: broken symbolic link (its target {os.readlink(p)!r} does not exist)")
        elif path.is_file():
            add(path, path.suffix.lower() in VIDEO_EXTENSIONS)
        elif path.is_symlink():
            errors.append(f"{shown(path)}: broken symbolic link (its target {os.readlink(path)!r} does not exist)")
        else:
            errors.append(f"{shown(path)}: no such file or folder")
    return images, videos, errors


def _inside(real: str, folder_real: str) -> bool:
    """Whether the resolved path ``real`` is ``folder_real`` or lies under it."""
    return real == folder_real or real.startswith(folder_real.rstrip(os.sep) + os.sep)


def image_record(path: str, frame: int | None, shape: tuple[int, ...], faces: list, model: str,
                 pixel_origin: float = 0.0, **extra) -> dict:
    """The JSON Lines record of one image or video frame (``extra``: more keys, e.g. track ids)."""
    return {"file": path, "frame": frame, "image_size": [int(shape[1]), int(shape[0])], "model": model,
            "pixel_origin": pixel_origin, "faces": [f.to_dict() for f in faces], **extra}


def input_key(path: str | Path) -> str:
    """The key of an input in the JSON Lines file: its resolved path, so that a folder spelled
    differently (``p500/``, ``./p500``, an absolute path, a link) is still the same input.
    Relative paths resolve against the working folder."""
    return os.path.realpath(path)


def done_inputs(json_path: Path) -> set[tuple[str, int | None]]:
    """(input key, frame) pairs already in a JSON Lines file; a half-written or garbled line (a
    run killed, or a full disk, mid-write) is dropped from the file, so its input runs again."""
    if not json_path.exists():
        return set()
    good, done = [], set()
    for line in json_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            done.add((input_key(rec["file"]), rec.get("frame")))
            good.append(line)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # interrupted write
    from .fileio import write_text_atomic

    write_text_atomic(json_path, "".join(g + "\n" for g in good))
    return done


# Suffixes OpenCV writes as colour images; an annotated copy of anything else (.pgm is gray only,
# a file named without a known suffix) gets ".png" appended to its name.
ANNOTATED_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def output_paths(inputs: list[str], images: list[Path], videos: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Where each input's annotated copy goes: ``out_dir`` / its path relative to the folder
    that holds all the ``inputs`` (one folder given: that folder), with its name and extension
    (videos: ``.mp4`` appended unless they are one). Raises DataError when an output would
    overwrite an input or two inputs would share one output, before anything is written."""
    bases = [os.path.abspath(i) if os.path.isdir(i) else os.path.dirname(os.path.abspath(i))
             for i in inputs if os.path.exists(i)]
    root = Path(os.path.commonpath(bases)) if bases else Path.cwd()
    files, video_set = [*images, *videos], set(videos)
    plan: dict[Path, Path] = {}
    for p in files:
        rel = Path(os.path.abspath(p)).relative_to(root)
        if p in video_set:
            out = out_dir / (rel if rel.suffix.lower() == ".mp4" else rel.with_name(rel.name + ".mp4"))
        else:
            out = out_dir / (rel if rel.suffix.lower() in ANNOTATED_SUFFIXES else rel.with_name(rel.name + ".png"))
        plan[p] = out
    inputs = {input_key(p): p for p in files}
    owners: dict[str, Path] = {}
    for p, out in plan.items():
        key = input_key(out)
        if key in inputs:
            raise DataError(out_dir, f"the annotated copy of {shown(p)} would overwrite the input "
                            f"{shown(inputs[key])}: choose an --out folder outside the inputs")
        if key in owners:
            raise DataError(out_dir, f"{shown(owners[key])} and {shown(p)} would both be annotated as "
                            f"{shown(out)}: rename one of them")
        owners[key] = p
    return plan


# -- per-process state for worker pools ------------------------------------------------------
_ALIGNER = None
_INIT_ERROR: str | None = None


def _make_aligner(opts: PredictOptions, default_threads: int | None = 1):
    """The FaceAligner of ``opts`` (its model and detector settings): the one recipe of every engine
    and command that runs images or videos (predict's workers, videos and Ray actors, ``asmnet align``), so that they
    give the same records. ``default_threads``: ONNX Runtime threads when ``opts.threads`` is None
    (None: ONNX Runtime's choice)."""
    from .api import FaceAligner

    return FaceAligner(opts.model, detector=opts.detector, backend=opts.backend, threads=opts.threads or default_threads,
                       min_score=opts.min_score, flip_tta=opts.flip_tta, pixel_origin=opts.pixel_origin,
                       refine=opts.refine, straighten=opts.straighten, rotation_search=opts.rotation_search,
                       early_stop=opts.early_stop, **opts.detector_options)


def _init_worker(opts: PredictOptions) -> None:
    """Pool initializer. It never raises: a pool whose initializer fails starts new workers forever."""
    global _ALIGNER, _INIT_ERROR
    cv2.setNumThreads(1)
    _ALIGNER, _INIT_ERROR = None, None
    try:
        _ALIGNER = _make_aligner(opts)
    except AsmnetError as exc:
        _INIT_ERROR = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported once by the parent instead of a hang
        _INIT_ERROR = f"cannot start a worker ({one_line(exc)})"


def one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line (OpenCV puts its message on the last line)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:160]}" if lines else type(exc).__name__


def _named(path: str, exc: AsmnetError) -> str:
    text = str(exc)
    return text if text.startswith(shown(path)) else f"{shown(path)}: {text}"


def _process_image(task: tuple[str, str | None]) -> tuple[dict | None, str | None, str | None]:
    """One task of this process's worker (see :func:`process_image`)."""
    if _ALIGNER is None:
        return None, None, _INIT_ERROR or "the worker has no model"
    return process_image(_ALIGNER, task)


def process_image(aligner, task: tuple[str, str | None]) -> tuple[dict | None, str | None, str | None]:
    """Read one image, predict, and write its annotated copy when ``task[1]`` names one.

    Returns (record, None, None) on success, (None, error line, None) for a bad file, and
    (None, None, message) for a problem of the model or detector, which stops the run."""
    path, out_file = task
    try:
        image, full_size, factor = read_image_reduced(path)  # a huge photo is decoded reduced
        faces = aligner(image, channel_order="bgr")
    except ModelError as exc:
        return None, None, str(exc)
    except AsmnetError as exc:
        return None, _named(path, exc), None
    except cv2.error as exc:
        return None, f"{shown(path)}: OpenCV failed ({one_line(exc)})", None
    except Exception as exc:  # noqa: BLE001 - one line per file; the batch goes on
        return None, f"{shown(path)}: unexpected error ({one_line(exc)})", None
    if out_file:
        from .draw import draw_faces, write_image

        try:
            write_image(out_file, draw_faces(image, faces, pixel_origin=aligner.pixel_origin))
        except OutputError as exc:
            if exc.errno in STOPPING_ERRNOS:  # every later image would fail the same way
                return None, None, str(exc)
            return None, str(exc), None
        except DataError as exc:
            return None, str(exc), None
    if factor > 1:
        from .api import at_full_size

        faces = [at_full_size(f, factor, aligner.pixel_origin) for f in faces]
    return (image_record(path, None, (full_size[1], full_size[0]), faces, aligner.model.info.name, aligner.pixel_origin),
            None, None)


def _failed(report: PredictReport, line: str) -> None:
    """Record a failed input and say so at once (the list is printed again at the end)."""
    report.failures.append(line)
    tqdm.write(f"asmnet: failed: {line}", file=sys.stderr)


def _write(sink: TextIO | None, record: dict) -> None:
    """Append one record and flush it; OutputError (which stops the run) when that fails. A line
    cut short by a full disk is dropped by the next ``--resume`` (see :func:`done_inputs`)."""
    if sink is not None:
        try:
            sink.write(json_text(record) + "\n")
            sink.flush()
        except OSError as exc:
            raise OutputError(sink.name, f"cannot write the JSON Lines output ({exc.strerror or exc})", exc.errno) from None


def run_images(images: list[Path], plan: dict[Path, Path], opts: PredictOptions, sink, report: PredictReport,
               done: set) -> None:
    """Images one by one (or on ``opts.workers`` processes), each record to ``sink``; bad files go
    to ``report.failures``. Raises :class:`ModelError` when the model or detector is unusable."""
    global _ALIGNER, _INIT_ERROR
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
    aligner = _make_aligner(opts)
    aligner.detector  # noqa: B018 - builds the detector now, so that a bad name fails here
    bar = tqdm(total=len(tasks), desc="images", unit="img", file=sys.stderr, disable=None)
    try:
        if opts.engine == "ray":
            from .ray_engine import process_tasks

            del aligner
            results = process_tasks(tasks, opts)
            try:
                _collect(results, sink, report, bar)
            finally:
                results.close()  # stops the Ray job (and a local cluster it started) on an error too
        elif opts.workers > 1:
            import multiprocessing as mp

            del aligner
            ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no inherited thread pools
            with ctx.Pool(opts.workers, initializer=_init_worker, initargs=(opts,)) as pool:
                results: Iterator = pool.imap_unordered(_process_image, tasks, chunksize=8)
                _collect(results, sink, report, bar)
        else:
            cv2.setNumThreads(1)
            _ALIGNER, _INIT_ERROR = aligner, None
            _collect(map(_process_image, tasks), sink, report, bar)
    finally:
        bar.close()


def _collect(results, sink, report: PredictReport, bar) -> None:
    for record, error, fatal in results:
        if fatal:
            raise AsmnetError(fatal)
        if error:
            _failed(report, error)
        else:
            _write(sink, record)
            report.done += 1
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


def run_video(source: str | int, opts: PredictOptions, sink, report: PredictReport, done: set,
              out_file: Path | None = None) -> None:
    """Track faces through a video file or camera, writing one record per frame. A video that
    cannot be read, or stops early, is listed in ``report.failures``; the frames read are kept."""
    # FFmpeg prints its decoder complaints ("moov atom not found", ...) straight to stderr; the
    # one-line failure below says it better. Read once, when OpenCV first uses FFmpeg.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        _track(source, opts, sink, report, done, out_file)
    except ModelError:
        raise
    except AsmnetError as exc:
        _failed(report, _named(str(source), exc))
    except cv2.error as exc:
        _failed(report, f"{shown(source)}: OpenCV failed ({one_line(exc)})")
    except OSError as exc:
        _failed(report, f"{shown(source)}: {exc.strerror or one_line(exc)}")


def _track(source: str | int, opts: PredictOptions, sink, report: PredictReport, done: set,
           out_file: Path | None) -> None:
    from .draw import draw_faces
    from .video import FaceTracker

    name = shown(source)  # for messages; records keep the file name as it is
    key = input_key(source) if isinstance(source, str) else str(source)
    with opencv_quiet():  # OpenCV's own "[ WARN ]" lines would precede the one-line failure below
        cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        _failed(report, f"{name}: cannot open video" + ("" if isinstance(source, int) else
                                                        " (not a video, or a format or codec this OpenCV lacks)"))
        return
    try:
        aligner = _make_aligner(opts, default_threads=None)
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
    try:
        while opts.max_frames is None or frame_idx < opts.max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            tracked = tracker.update(frame, frame_idx / fps)
            faces = [t.face for t in tracked]
            if (key, frame_idx) not in done:
                _write(sink, image_record(str(source), frame_idx, frame.shape, faces, aligner.model.info.name,
                                          aligner.pixel_origin, track_ids=[t.id for t in tracked]))
            if tmp_video is not None:
                if writer is None:
                    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        _failed(report, f"{final_video}: cannot write the annotated video (this OpenCV has no "
                                "mp4v encoder); the JSON records are written")
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
        tqdm.write(f"{name}: {frame_idx} frames, {frame_idx / max(1e-9, time.time() - t0):.1f} frames/s, "
                   f"detector ran on {tracker.detector_runs} frames", file=sys.stderr)


def predict(inputs: list[str], opts: PredictOptions, webcam: int | None = None) -> PredictReport:
    """Run the whole job and return a :class:`PredictReport`; a bad input is listed in its
    ``failures``, never raised. Raises :class:`DataError` before any work when no input exists,
    or when an output cannot be written or would overwrite an input, and :class:`ModelError`
    when the model or detector cannot be loaded or outputs NaN."""
    report = PredictReport()
    max_pixels_limit()  # a bad $ASMNET_MAX_PIXELS fails here once, not for every image
    out_dir = Path(opts.out_dir) if opts.out_dir else None
    images, videos, errors = expand_inputs(inputs, skip=out_dir)
    if opts.engine != "local":
        from .ray_engine import check_job

        check_job(opts, videos, webcam)  # before any output is opened or model loaded
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
    if opts.json_path and input_key(opts.json_path) in {input_key(p) for p in (*images, *videos)}:
        raise DataError(opts.json_path, "--json names an input file: it would be overwritten")
    sink, done = _open_output(opts)
    try:
        run_images(images, plan, opts, sink, report, done)
        for v in videos:
            run_video(str(v), opts, sink, report, done, plan.get(v))
        if webcam is not None:
            run_video(webcam, opts, sink, report, done)
    finally:
        if sink is not None:
            try:
                sink.close()
            except OSError:
                pass  # a full disk: already reported by _write; --resume drops a half-written line
    return report


def _open_output(opts: PredictOptions) -> tuple[TextIO | None, set]:
    """The JSON Lines file, open for writing, and the inputs it already holds (with ``resume``)."""
    if not opts.json_path:
        return None, set()
    path = Path(opts.json_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        done = done_inputs(path) if opts.resume else set()
        return open(path, "a" if opts.resume else "w", encoding="utf-8"), done
    except OSError as exc:
        raise DataError(path, f"cannot write the JSON Lines output ({exc.strerror or exc})") from None


def summary_line(report: PredictReport) -> str:
    """One line for the end of a run: done, already there, failed."""
    return (f"asmnet: {report.done} done, {report.skipped} already in the output, "
            f"{len(report.failures)} failed")


__all__ = ["PredictOptions", "PredictReport", "expand_inputs", "predict"]
