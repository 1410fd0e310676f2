"""``asmnet align``: the faces of images warped onto a template (:mod:`asmnet.align`), each crop
written beside the inputs' relative paths under the output folder, with a JSON Lines index that
this process writes at the end, in the order of the inputs."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from ..align import check_template
from ..api import AlignerSettings, FaceAligner
from ..errors import DataError, ModelError
from ..fileio import write_text_atomic
from ..records import record_text
from .inputs import crop_paths, expand_inputs
from .local_engine import run_here
from .units import CropSettings, align_work, protected_inputs

if TYPE_CHECKING:
    from .ray_engine import RayOptions


@dataclass
class AlignOptions(AlignerSettings):
    """How :func:`align_inputs` runs: the aligner's settings (the fields of
    :class:`asmnet.api.AlignerSettings`) and the engine: "local" (this process) or "ray" (the
    actors of a Ray cluster, ``ray``: its address and resources per actor; None: defaults)."""

    engine: str = "local"
    ray: RayOptions | None = None


def align_inputs(inputs: list[str], out_dir: str | Path, template: str = "arcface", size: int | None = None,
                 fmt: str = "png", json_path: str | Path | None = None, options: AlignOptions | None = None,
                 skip_flagged: bool = False) -> tuple[list[dict], list[str]]:
    """The images of ``inputs`` (files, folders searched recursively) aligned into ``out_dir``
    (crops named after each input's path relative to the inputs' common folder, see
    :func:`asmnet.jobs.inputs.crop_paths`) with a JSON Lines index at ``json_path`` (default
    OUT/aligned.jsonl), written by this process at the end, in the order of the inputs.

    The aligner is the one of ``options`` (default: the defaults). With ``options.engine ==
    "ray"`` the images go to the actors of a Ray cluster (:mod:`asmnet.jobs.ray_engine`): each
    actor builds the same aligner and writes the crops, and the records, crop files and
    failures are those of the local engine. ``skip_flagged``: no crop (and no record) for faces
    flagged as likely failures.

    Returns (records, one line per failed input). Raises DataError when ``out_dir`` is an input
    folder or nothing can be read, ModelError for a model or detector problem (which would fail
    every image, or ``skip_flagged`` with a model without a quality threshold), AsmnetError for a
    Ray cluster that cannot run the job."""
    options = options if options is not None else AlignOptions()
    ray = options.engine != "local"
    if ray:
        from .ray_engine import check_job

        check_job(options.engine, 1, [], None)  # before any work: Ray installed
    size = check_template(template, size)
    out_dir = Path(out_dir)
    out_real = os.path.realpath(out_dir)
    if any(os.path.isdir(i) and os.path.realpath(i) == out_real for i in inputs):
        raise DataError(out_dir, "is an input folder: choose an --out folder outside the inputs")
    images, videos, failures = expand_inputs(inputs)
    # crops of an earlier run inside an input folder are outputs, not inputs
    images = [p for p in images if not os.path.realpath(p).startswith(out_real.rstrip(os.sep) + os.sep)]
    failures += [f"{v}: a video (asmnet align takes images; asmnet predict tracks videos)" for v in videos]
    if not images:
        raise DataError(None, "no images found in the inputs" + (f" ({failures[0]})" if failures else ""))
    work = align_work(CropSettings(template, size, fmt, protected_inputs(images, fmt), bool(skip_flagged)))
    plan = crop_paths(images, inputs, out_dir)
    tasks = [(str(p), str(plan[p])) for p in images]
    # the local engine's aligner; for Ray, built here once too, so that a bad model or detector
    # fails in one line before any cluster starts
    aligner = FaceAligner.from_settings(options)
    if skip_flagged and aligner.quality_threshold is None:  # every image would fail the same way
        raise ModelError(None, f"--skip-flagged needs a quality threshold; model {aligner.model.info.name!r} has none "
                         f"for its {aligner.quality_kind!r} score")
    if ray:
        from .ray_engine import run_tasks

        del aligner
        # this job writes its index at the end: a failed Ray job leaves the crops only
        results = run_tasks(tasks, options.aligner_settings(), options.ray, work,
                            kept="the crops written so far are kept")
    else:
        results = run_here(tasks, work, aligner)
    answers: dict[int, tuple[dict | None, str | None]] = {}
    bar = tqdm(total=len(tasks), desc="align", unit="img", file=sys.stderr, disable=None)
    try:
        for index, record, error, fatal in results:
            if fatal:
                raise ModelError(None, fatal)
            answers.setdefault(index, (record, error))
            bar.update(1)
    finally:
        bar.close()
        results.close()  # stops the Ray job (and a local Ray instance it started) on an error too
    records = []
    for index in range(len(tasks)):  # the inputs' order, whichever order the answers came in
        record, error = answers[index]
        if error:
            failures.append(error)
        else:
            records.append(record)
    index_file = Path(json_path) if json_path else out_dir / "aligned.jsonl"
    write_text_atomic(index_file, "".join(record_text(r) + "\n" for r in records))
    return records, failures
