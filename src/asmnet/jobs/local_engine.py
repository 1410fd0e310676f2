"""The local engine: units of work (:mod:`asmnet.jobs.units`) run in this process, or spread
over a pool of worker processes, each with its own :class:`FaceAligner`. It runs what it is
given and knows no job."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.context import SpawnProcess
from multiprocessing.pool import Pool
from typing import Any

import cv2

from ..api import AlignerSettings, FaceAligner
from ..errors import AsmnetError
from .units import Work, one_line

Task = tuple[str, str | None]  # (input path, its output: an annotated copy, a crop base, or None)
IndexedResult = tuple[int, dict | None, str | None, str | None]  # the task's index and its units.Result


def run_here(tasks: list[Task], work: Work, aligner: Any) -> Iterator[IndexedResult]:
    """Run ``work`` on each task in this process with ``aligner``, in the tasks' order."""
    for index, (path, out) in enumerate(tasks):
        yield (index, *work(aligner, path, out))


def run_in_pool(tasks: list[Task], work: Work, settings: AlignerSettings, workers: int) -> Iterator[IndexedResult]:
    """Run ``work`` on each task in ``workers`` fresh processes (each with the FaceAligner of
    ``settings``, one ONNX Runtime thread unless they say otherwise), yielding results in the
    order they finish. Closing the iterator stops the pool. A worker whose aligner cannot be
    built answers every task with a fatal message instead of failing to start."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no inherited thread pools
    with _QuietStartPool(workers, initializer=_init_worker, initargs=(settings, work, os.getpid()),
                         context=ctx) as pool:
        yield from pool.imap_unordered(_run_task, list(enumerate(tasks)), chunksize=8)


class _QuietStartProcess(SpawnProcess):
    """A spawned worker that starts with Ctrl-C ignored (inherited through exec, so a Ctrl-C while it
    imports prints no traceback; the parent stops the pool). Only the start itself ignores it in
    the parent: a Ctrl-C is lost for no longer than a fork and exec."""

    def start(self) -> None:
        with _sigint_ignored():
            super().start()


class _QuietStartPool(Pool):
    """multiprocessing's Pool with :class:`_QuietStartProcess` workers."""

    @staticmethod
    def Process(ctx, *args, **kwds):  # noqa: N802 - multiprocessing's name
        return _QuietStartProcess(*args, **kwds)


# -- per-process state of a pool's workers -----------------------------------------------------
_ALIGNER: FaceAligner | None = None
_WORK: Work | None = None
_INIT_ERROR: str | None = None


def _init_worker(settings: AlignerSettings, work: Work, parent: int | None = None) -> None:
    """Pool initializer. It never raises: a pool whose initializer fails starts new workers forever.

    The parent handles Ctrl-C (and stops the pool), so a worker ignores SIGINT instead of printing
    a KeyboardInterrupt traceback; on Linux it also dies with its parent (``parent``: the parent's
    pid), instead of printing a BrokenPipeError when it writes a result nobody reads."""
    global _ALIGNER, _WORK, _INIT_ERROR
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    cv2.setNumThreads(1)
    _ALIGNER, _WORK, _INIT_ERROR = None, work, None
    try:
        _ALIGNER = FaceAligner.from_settings(settings, default_threads=1)
    except AsmnetError as exc:
        _INIT_ERROR = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported once by the parent instead of a hang
        _INIT_ERROR = f"cannot start a worker ({one_line(exc)})"


def _run_task(indexed: tuple[int, Task]) -> IndexedResult:
    """One task in a pool's worker."""
    index, (path, out) = indexed
    if _ALIGNER is None or _WORK is None:
        return index, None, None, _INIT_ERROR or "the worker has no model"
    return (index, *_WORK(_ALIGNER, path, out))


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


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored inside (in the main thread; elsewhere nothing changes): processes started
    here inherit that through exec."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
