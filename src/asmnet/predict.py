"""``asmnet predict``: images, folders, videos and webcams -> annotated pictures + JSON Lines.

Results stream to the JSON Lines file (or standard output: ``json_path="-"``) as they are made,
one record per image or frame (:mod:`asmnet.records`); the file is made at the first record, so a
run that writes none leaves none. With ``resume=True`` inputs already recorded there are skipped,
so an interrupted run over a huge folder loses nothing. ``workers > 1`` spreads decoding and
inference over processes.
"""

from __future__ import annotations

import errno
import os
import re
import signal
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
from .fileio import check_writable_file, check_writable_folder
from .formats import IMAGE_EXTENSIONS
from .formats.image import max_pixels_limit, read_image_reduced
from .formats.video import check_frame, open_video
from .inference import DEFAULT_REFINE
from .records import (
    RecordsFile,
    check_same_settings,
    count,
    image_record,
    read_records_file,
    record_text,
    summary_lines,
)

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
    json_path: str | None = None  # JSON Lines; "-": standard output
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


STDOUT = "-"  # json_path meaning standard output


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


def input_key(path: str | Path) -> str:
    """The key of an input: its resolved path, so that a folder spelled differently (``p500/``,
    ``./p500``, an absolute path, a link) is still the same input; the same key as a record's
    (:func:`asmnet.records.record_key`). Relative paths resolve against the working folder."""
    return os.path.realpath(path)


# Suffixes OpenCV writes as colour images; an annotated copy of anything else (.pgm is gray only,
# a file named without a known suffix) gets ".png" appended to its name.
ANNOTATED_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def output_paths(inputs: list[str], images: list[Path], videos: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Where each input's annotated copy goes: ``out_dir`` / its path relative to the folder
    that holds all the ``inputs`` (one folder given: that folder), with its name and extension
    (videos: ``.mp4`` appended unless they are one). Raises DataError when an output would
    overwrite an input or two inputs would share one output, or when ``out_dir`` is one of the
    input folders (its copies would be read as inputs by the next run), before anything is written."""
    out_real = os.path.realpath(out_dir)
    if any(os.path.isdir(i) and os.path.realpath(i) == out_real for i in inputs):
        raise DataError(out_dir, "is an input folder: the annotated copies would overwrite the inputs or be read "
                        "as inputs by the next run; choose an --out folder outside the inputs")
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


# The temporaries a killed run leaves beside its outputs: fileio.write_atomic's
# ".NAME.<8 characters of mkstemp>.tmp" and an annotated video's ".NAME.part.mp4".
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:[a-z0-9_]{8}\.tmp|part\.mp4)")


def remove_stale_temporaries(outputs: list[Path]) -> int:
    """Delete the temporaries an interrupted run left beside these ``outputs`` (only those named
    after one of them, so nothing of the user's goes); returns how many were deleted."""
    by_folder: dict[Path, set[str]] = {}
    for out in outputs:
        by_folder.setdefault(out.parent, set()).add(out.name)
    removed = 0
    for folder, names in by_folder.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:  # not made yet: nothing left there
            continue
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry.name)
            if match and match["name"] in names and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass  # another run's, or already gone: it does no harm
    return removed


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


def _init_worker(opts: PredictOptions, parent: int | None = None) -> None:
    """Pool initializer. It never raises: a pool whose initializer fails starts new workers forever.

    The parent handles Ctrl-C (and stops the pool), so a worker ignores SIGINT instead of printing
    a KeyboardInterrupt traceback; on Linux it also dies with its parent (``parent``: the parent's
    pid), instead of printing a BrokenPipeError when it writes a result nobody reads."""
    global _ALIGNER, _INIT_ERROR
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    cv2.setNumThreads(1)
    _ALIGNER, _INIT_ERROR = None, None
    try:
        _ALIGNER = _make_aligner(opts)
    except AsmnetError as exc:
        _INIT_ERROR = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported once by the parent instead of a hang
        _INIT_ERROR = f"cannot start a worker ({one_line(exc)})"


def _die_with_parent(parent: int | None) -> None:
    """Ask Linux to end this process quietly (SIGTERM) when its parent dies; elsewhere, nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:  # the parent died before the call
        os._exit(1)


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
    return image_record(path, None, full_size, faces, aligner.model.info.name, aligner.pixel_origin), None, None


def _failed(report: PredictReport, line: str) -> None:
    """Record a failed input and say so at once (the list is printed again at the end)."""
    report.failures.append(line)
    tqdm.write(f"asmnet: failed: {line}", file=sys.stderr)


class RecordSink:
    """Where a run's records go: a JSON Lines file, made (or with ``resume`` appended to) at the
    first record, so that a run that writes none leaves no file and an existing one as it was;
    standard output (``path == "-"``); or nowhere (``path`` None).

    ``existing``: what ``--resume`` found in the file (see :meth:`repair`)."""

    def __init__(self, path: str | None, resume: bool = False, existing: RecordsFile | None = None):
        self.path, self.resume, self.existing = path, resume, existing or RecordsFile()
        self.stream: TextIO | None = sys.stdout if path == STDOUT else None
        self.name = "standard output" if path == STDOUT else path

    def write(self, record: dict) -> None:
        """Append one record and flush it; OutputError (which stops the run) when that fails. A
        line cut short by a full disk is dropped by the next ``--resume``."""
        if self.path is None:
            return
        try:
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(record_text(record) + "\n")
            self.stream.flush()
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and self.path == STDOUT:
                _stdout_to_devnull()  # the reader left (e.g. `| head`): no second error at exit
            raise OutputError(self.name, f"cannot write the JSON Lines output ({exc.strerror or exc})",
                              exc.errno) from None

    def repair(self) -> None:
        """Drop the record an interrupted write cut short at the end of the ``resume`` file (its
        input runs again), and end a whole last record that lacks it with its newline; every
        other byte stays as it was. OutputError when the file cannot be changed."""
        try:
            if self.existing.torn_tail:
                os.truncate(self.path, self.existing.complete_bytes)
            if self.existing.missing_newline:
                with open(self.path, "a", encoding="utf-8") as stream:
                    stream.write("\n")
        except OSError as exc:
            raise OutputError(self.path, f"cannot write the JSON Lines output ({exc.strerror or exc})",
                              exc.errno) from None
        self.existing.torn_tail = self.existing.missing_newline = False

    def _open(self) -> TextIO:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a" if self.resume else "w", encoding="utf-8")

    def close(self) -> None:
        if self.stream is not None and self.stream is not sys.stdout:
            try:
                self.stream.close()
            except OSError:
                pass  # a full disk: already reported by write; --resume drops a half-written line


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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
    """Images one by one (or on ``opts.workers`` processes), each record to ``sink`` and, in
    words, to ``show``; bad files go to ``report.failures``. Raises :class:`ModelError` when the
    model or detector is unusable."""
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
                _collect(results, sink, report, bar, show)
            finally:
                results.close()  # stops the Ray job (and a local cluster it started) on an error too
        elif opts.workers > 1:
            import multiprocessing as mp

            del aligner
            ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no inherited thread pools
            with _sigint_ignored():  # workers start ignoring Ctrl-C: the parent stops them
                pool = ctx.Pool(opts.workers, initializer=_init_worker, initargs=(opts, os.getpid()))
            with pool:
                results: Iterator = pool.imap_unordered(_process_image, tasks, chunksize=8)
                _collect(results, sink, report, bar, show)
        else:
            cv2.setNumThreads(1)
            _ALIGNER, _INIT_ERROR = aligner, None
            _collect(map(_process_image, tasks), sink, report, bar, show)
    finally:
        bar.close()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored inside (in the main thread; elsewhere nothing changes): processes started
    here inherit that through exec, so a Ctrl-C while they import prints no traceback either."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _collect(results, sink: RecordSink, report: PredictReport, bar, show: TextIO | None) -> None:
    for record, error, fatal in results:
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
        _failed(report, _named(str(source), exc))
    except cv2.error as exc:
        _failed(report, f"{shown(source)}: OpenCV failed ({one_line(exc)})")
    except OSError as exc:
        _failed(report, f"{shown(source)}: {exc.strerror or one_line(exc)}")


def _track(source: str | int, opts: PredictOptions, sink: RecordSink, report: PredictReport, done: set,
           out_file: Path | None, show: TextIO | None) -> None:
    from .draw import draw_faces
    from .video import FaceTracker

    name = shown(source)  # for messages; records keep the file's absolute path
    key = input_key(source) if isinstance(source, str) else None  # a camera's frames are never done
    with opencv_quiet():  # OpenCV's own "[ WARN ]" lines would precede the one-line failure
        cap = open_video(source)  # DataError: cannot be opened, or frames over the pixel limit
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
        remove_stale_temporaries(list(plan.values()))
    sink = _record_sink(opts, {input_key(p) for p in (*images, *videos)})
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


def _record_sink(opts: PredictOptions, input_keys: set[str]) -> RecordSink:
    """The run's :class:`RecordSink`, after every check that can be made before the work: the
    file is writable and no input, and with ``resume`` holds only records of this model and
    pixel origin (their inputs are then skipped)."""
    path = opts.json_path
    if not path or path == STDOUT:
        return RecordSink(path)
    if input_key(path) in input_keys:
        raise DataError(path, "--json names an input file: it would be overwritten")
    check_writable_file(path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise OutputError(path, "cannot write the JSON Lines output (Permission denied)", errno.EACCES)
    if not opts.resume:
        return RecordSink(path)
    existing = read_records_file(path)
    if existing.settings:
        check_same_settings(path, existing, _model_name(opts), opts.pixel_origin)
    sink = RecordSink(path, resume=True, existing=existing)
    sink.repair()
    return sink


def _model_name(opts: PredictOptions) -> str:
    """The name the records of ``opts.model`` carry (the model is loaded, not the detector)."""
    from .runtime import load_model

    return load_model(opts.model, backend=opts.backend, threads=1).info.name


def summary_line(report: PredictReport) -> str:
    """One line for the end of a run: inputs done, already there and failed, faces found and flagged."""
    return (f"asmnet: {report.done} done, {report.skipped} already in the output, "
            f"{len(report.failures)} failed; {count(report.faces, 'face')} found, {report.flagged} flagged")


__all__ = ["PredictOptions", "PredictReport", "RecordSink", "check_outputs", "expand_inputs", "predict",
           "remove_stale_temporaries", "summary_line"]
