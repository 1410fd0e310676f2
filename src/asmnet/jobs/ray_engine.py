"""The Ray engine (``asmnet predict --engine ray``, ``asmnet align --engine ray``): the images of
a job spread over the actors of a Ray cluster. Like the local engine it runs the unit of work it
is given (:mod:`asmnet.jobs.units`) and knows no job.

Ray Data carries the job's image paths to an actor pool; each actor holds one :class:`FaceAligner`
(built once, in its constructor), reads and decodes its share of the files itself, writes their
annotated copies (predict) or aligned crops (align) when asked, and sends back one row per image:
the JSON record, or the one-line error for a file that cannot be used. The driver (this process)
writes the records, so the JSON Lines file is the same as the local engine's (predict: in another
order; align: in the inputs' order, as the local engine writes it).

Ray retries the tasks of an actor that dies; a retried task may answer again for images already
answered, so the driver keeps the first answer per image (every input ends in the output exactly
once) and reports any image that never came back as failed instead of losing it.

The same actor class works in your own Ray Data pipeline::

    import ray
    from asmnet.jobs.ray_engine import AlignerActor

    ds = ray.data.from_items([{"path": p} for p in paths])
    out = ds.map_batches(AlignerActor, fn_constructor_kwargs={"model": "default"}, batch_size=16,
                         compute=ray.data.ActorPoolStrategy(size=4), num_cpus=1)
    for row in out.iter_rows():
        row["record"]  # the JSON text of `asmnet predict`'s record (asmnet.records; "" when the image failed)
        row["error"]   # "" or the file's one-line error

Needs the ``ray`` extra (``pip install "asmnet[ray]"``); nothing else in asmnet imports Ray.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..api import AlignerSettings, FaceAligner
from ..errors import AsmnetError, ModelError
from ..records import record_text
from .local_engine import IndexedResult, Task
from .units import Work, one_line, predict_image

RAY_EXTRA = "pip install 'asmnet[ray]'"


@dataclass
class RayOptions:
    """Where the job runs and what each actor gets.

    ``address``: a running cluster (``"auto"``, ``"HOST:6379"`` or ``"ray://HOST:10001"``); None
    does what ``ray.init()`` does: joins the cluster in ``$RAY_ADDRESS`` (as ``ray job submit``
    sets it) or one started with ``ray start`` on this machine, and otherwise starts a local Ray
    instance for the job, stopped at the end. A Ray session already started in this process
    (e.g. by ``ray.init()``) is used as it is.
    ``actors``: the number of actors (one :class:`FaceAligner` each); None: as many as the
    cluster's CPUs (or GPUs, with ``gpus``) allow. ``cpus`` / ``gpus``: Ray resources per actor;
    an actor runs ONNX Runtime with ``ceil(cpus)`` threads unless the aligner settings' ``threads``
    say otherwise, and on CUDA when ``gpus > 0``. ``batch_size``: images per actor call.
    """

    address: str | None = None
    actors: int | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise AsmnetError(f"the number of Ray actors must be at least 1, got {self.actors}")
        if not (math.isfinite(self.cpus) and self.cpus > 0):
            raise AsmnetError(f"CPUs per Ray actor must be a number above 0, got {self.cpus}")
        if not (math.isfinite(self.gpus) and self.gpus >= 0):
            raise AsmnetError(f"GPUs per Ray actor must be 0 or more, got {self.gpus}")
        if self.batch_size < 1:
            raise AsmnetError(f"the Ray batch size must be at least 1, got {self.batch_size}")


def require_ray() -> Any:
    """The ``ray`` module with Ray Data loaded; AsmnetError naming the extra when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data needs ray[data]'s pandas/pyarrow too
    except ImportError as exc:
        raise AsmnetError(f"--engine ray needs Ray Data, which is not installed ({RAY_EXTRA}): {exc}") from None
    return ray


def check_job(engine: str, workers: int, videos: list, webcam: int | None) -> None:
    """Refuse, in one line, what the Ray engine does not run (an ``engine`` that is not "ray",
    ``workers`` > 1, videos, a webcam) and a missing Ray; AsmnetError. Called before any work."""
    if engine != "ray":
        raise AsmnetError(f"unknown engine {engine!r} (local or ray)")
    if workers > 1:
        raise AsmnetError("--workers is for --engine local; with --engine ray the actors do the work "
                          "(--ray-actors N)")
    if webcam is not None:
        raise AsmnetError("--webcam runs on this machine only: use --engine local")
    if videos:
        raise AsmnetError(f"{videos[0]}: --engine ray runs images only (a video's frames depend on each other "
                          "and are tracked in order): run videos with --engine local")
    require_ray()


# -- the actor ---------------------------------------------------------------------------------
class AlignerActor:
    """A callable class for ``ray.data.Dataset.map_batches``: one :class:`FaceAligner` per actor.

    Each call takes a batch with a ``"path"`` column (image files every worker can read) and an
    optional ``"out_file"`` column (each image's output, ``""`` for none), runs ``work`` on each
    image, and returns the batch's columns plus ``"record"`` (the JSON text of the record, ``""``
    on failure), ``"error"`` (``""`` or the file's one-line error) and ``"fatal"`` (``""`` or a
    model / detector problem that makes every image fail: stop the job). It never raises for a
    bad image.

    ``work``: the unit of work (:mod:`asmnet.jobs.units`); by default ``asmnet predict``'s
    (:func:`~asmnet.jobs.units.predict_image`: ``"out_file"`` is where to write the annotated
    image); ``asmnet align``'s is :func:`~asmnet.jobs.units.align_work` of its crop settings
    (``"out_file"``: each image's crop base, ``OUT/a/x.jpg`` for the crops ``OUT/a/x.jpg.faceK.png``).
    The aligner settings are an :class:`asmnet.api.AlignerSettings`, or its fields as keywords
    (``model=``, ``detector=``, ``threads=``, ``min_score=``, ...); ``gpu=True`` runs the ONNX model
    with ONNX Runtime's CUDA provider (``onnxruntime-gpu``); ``cwd``: the folder that relative
    paths are relative to (the actor changes to it when it exists there).
    """

    def __init__(self, settings: AlignerSettings | None = None, *, work: Work = predict_image, gpu: bool = False,
                 cwd: str | None = None, **fields: Any):
        import cv2

        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # relative paths mean what they mean to the driver (same machine or shared mount)
        cv2.setNumThreads(1)  # the actor's CPUs go to ONNX Runtime; OpenCV's pool would compete
        self.aligner, self.fatal, self.work = None, "", work
        try:
            # the local engine's own recipe: the same settings, the same records
            aligner = FaceAligner.from_settings(settings if settings is not None else AlignerSettings(**fields),
                                                default_threads=1)
            aligner.detector  # noqa: B018 - built now, so that a bad detector is one fatal line
            if gpu:
                use_cuda(aligner.model)
            self.aligner = aligner
        except AsmnetError as exc:
            self.fatal = str(exc)
        except Exception as exc:  # noqa: BLE001 - sent to the driver as one line, not an actor crash loop
            self.fatal = f"cannot start a Ray actor ({one_line(exc)})"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        outs = [str(o) for o in batch["out_file"]] if "out_file" in batch else [""] * len(paths)
        records, errors, fatals = [], [], []
        for path, out_file in zip(paths, outs):
            if self.aligner is None:
                record, error, fatal = None, None, self.fatal
            else:
                record, error, fatal = self.work(self.aligner, path, out_file or None)
            records.append(record_text(record) if record is not None else "")
            errors.append(error or "")
            fatals.append(fatal or "")
        return {**batch, "record": np.array(records, dtype=object), "error": np.array(errors, dtype=object),
                "fatal": np.array(fatals, dtype=object)}


def use_cuda(model: Any) -> None:
    """Run an ONNX model on ONNX Runtime's CUDA provider; ModelError when it cannot."""
    if getattr(model, "backend", None) != "onnx":
        raise ModelError(None, "GPU actors run ONNX models only (--backend onnx)")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ModelError(None, "this actor has a GPU but its onnxruntime has no CUDA provider "
                         "(install onnxruntime-gpu instead of onnxruntime on the workers)")
    model.set_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])


# -- the driver --------------------------------------------------------------------------------
def _quiet_ray_logs() -> None:
    """Ray's INFO lines and Ray Data's progress bars would bury asmnet's own bar and messages."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _connect(ray: Any, rop: RayOptions) -> bool:
    """Join or start the cluster; True when this call started Ray (and so must stop it)."""
    if ray.is_initialized():
        return False
    _quiet_ray_logs()
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR}
    if rop.address:
        _check_reachable(rop.address)
    try:
        if rop.address:
            ray.init(address=rop.address, **kwargs)
        else:
            ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError... from Ray
        where = f"the Ray cluster at {rop.address}" if rop.address else "a local Ray instance"
        raise AsmnetError(f"cannot start or join {where} ({_last_line(exc)})") from None
    _quiet_ray_logs()  # again: ray.init sets up its loggers
    return True


def _check_reachable(address: str) -> None:
    """AsmnetError unless HOST:PORT (or ray://HOST:PORT) accepts a connection: Ray itself retries
    a wrong address for minutes, printing warnings. ``auto`` and other forms are left to Ray."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise AsmnetError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})") from None


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:200]}" if lines else type(exc).__name__


def _pool(ray: Any, rop: RayOptions, tasks: int) -> Any:
    """The actor pool: ``rop.actors`` actors (no more than tasks), or 1 up to what the cluster holds."""
    resources = ray.cluster_resources()
    if rop.gpus > 0 and resources.get("GPU", 0) < rop.gpus:
        raise AsmnetError(f"{rop.gpus:g} GPU(s) per actor asked, but the Ray cluster has "
                          f"{resources.get('GPU', 0):g} GPU(s)")
    if resources.get("CPU", 0) < rop.cpus:
        raise AsmnetError(f"{rop.cpus:g} CPU(s) per actor asked, but the Ray cluster has {resources.get('CPU', 0):g}")
    if rop.actors is not None:
        return ray.data.ActorPoolStrategy(size=min(rop.actors, tasks))
    fits = resources.get("CPU", 0) // rop.cpus
    if rop.gpus > 0:
        fits = min(fits, resources.get("GPU", 0) // rop.gpus)
    return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, min(int(fits), tasks)))


def _max_actors(compute: Any) -> int:
    return int(getattr(compute, "max_size", None) or getattr(compute, "size", None) or 1)


def run_tasks(tasks: list[Task], settings: AlignerSettings, rop: RayOptions | None = None,
              work: Work = predict_image, kept: str = "--resume continues from the records written"
              ) -> Iterator[IndexedResult]:
    """Run ``work`` on each (image path, output) task on the actors of a Ray cluster (each with the
    FaceAligner of ``settings``), yielding one (task index, record, error, fatal) per task in the
    order they finish, each index once: the results of the local engine
    (:mod:`asmnet.jobs.local_engine`). A task that never came back is yielded last as a failure.

    Starts (and at the end stops) a local Ray instance unless ``rop.address`` names a cluster or
    Ray is already initialised. Raises AsmnetError for a cluster that cannot be reached or cannot
    hold one actor, or a Ray job that fails as a whole (its message ends with ``kept``: what the
    job keeps of the work done); the results yielded before stay valid.
    """
    ray = require_ray()
    rop = rop or RayOptions()
    started = _connect(ray, rop)
    try:
        yield from _run(ray, tasks, settings, rop, work, kept)
    finally:
        if started:
            ray.shutdown()


def _run(ray: Any, tasks: list[Task], settings: AlignerSettings, rop: RayOptions, work: Work,
         kept: str) -> Iterator[IndexedResult]:
    compute = _pool(ray, rop, len(tasks))
    rows = [{"index": i, "path": str(path), "out_file": out or ""} for i, (path, out) in enumerate(tasks)]
    # one block per batch: an actor that dies loses (and Ray redoes) one batch; batches small
    # enough that a small job still reaches every actor of the pool
    batch_size = max(1, min(rop.batch_size, math.ceil(len(rows) / _max_actors(compute))))
    ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))
    threads = settings.threads or max(1, math.ceil(rop.cpus))
    out = ds.map_batches(
        AlignerActor, batch_size=batch_size, batch_format="numpy", compute=compute,
        num_cpus=rop.cpus, num_gpus=rop.gpus or None,
        fn_constructor_kwargs={"settings": replace(settings.aligner_settings(), threads=threads), "work": work,
                               "gpu": rop.gpus > 0, "cwd": os.getcwd()},
    )
    answered: set[int] = set()
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start
    ctx.enable_progress_bars = ctx.print_on_execution_start = False  # asmnet shows its own bar
    try:
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            for index, record, error, fatal in zip(batch["index"], batch["record"], batch["error"], batch["fatal"]):
                index = int(index)
                if index in answered:
                    continue  # a retried task answering again: the first answer is already out
                answered.add(index)
                yield index, (json.loads(record) if record else None), (error or None), (fatal or None)
    except AsmnetError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray's task/actor errors: one line, the records so far are kept
        raise AsmnetError(f"the Ray job failed after {len(answered)} of {len(tasks)} images "
                          f"({_last_line(exc)}); {kept}") from None
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
    for i, (path, _) in enumerate(tasks):
        if i not in answered:  # never silently lost: say so, and --resume will try it again
            yield i, None, f"{path}: no result came back from the Ray job", None


__all__ = ["AlignerActor", "RayOptions", "check_job", "require_ray", "run_tasks", "use_cuda"]
