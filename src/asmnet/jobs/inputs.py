"""The inputs of a batch job and the names of its outputs: folders expanded into images and
videos, each file once; annotated copies and crops named after each input's path relative to
the inputs; the temporaries a killed run left beside its outputs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import DataError, shown
from ..formats import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# Suffixes OpenCV writes as colour images; an annotated copy of anything else (.pgm is gray only,
# a file named without a known suffix) gets ".png" appended to its name.
ANNOTATED_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


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
                if p.suffix.lower() not in IMAGE_EXTENSIONS or (own and inside(os.path.realpath(p), own)):
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


def inside(real: str, folder_real: str) -> bool:
    """Whether the resolved path ``real`` is ``folder_real`` or lies under it."""
    return real == folder_real or real.startswith(folder_real.rstrip(os.sep) + os.sep)


def input_key(path: str | Path) -> str:
    """The key of an input: its resolved path, so that a folder spelled differently (``p500/``,
    ``./p500``, an absolute path, a link) is still the same input; the same key as a record's
    (:func:`asmnet.records.record_key`). Relative paths resolve against the working folder."""
    return os.path.realpath(path)


def inputs_root(inputs: list[str]) -> Path:
    """The folder that holds all the ``inputs`` that exist (one folder given: that folder; none:
    the working folder): outputs are named after the inputs' paths relative to it."""
    bases = [os.path.abspath(i) if os.path.isdir(i) else os.path.dirname(os.path.abspath(i))
             for i in inputs if os.path.exists(i)]
    return Path(os.path.commonpath(bases)) if bases else Path.cwd()


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
    root = inputs_root(inputs)
    files, video_set = [*images, *videos], set(videos)
    plan: dict[Path, Path] = {}
    for p in files:
        rel = Path(os.path.abspath(p)).relative_to(root)
        if p in video_set:
            out = out_dir / (rel if rel.suffix.lower() == ".mp4" else rel.with_name(rel.name + ".mp4"))
        else:
            out = out_dir / (rel if rel.suffix.lower() in ANNOTATED_SUFFIXES else rel.with_name(rel.name + ".png"))
        plan[p] = out
    keys = {input_key(p): p for p in files}
    owners: dict[str, Path] = {}
    for p, out in plan.items():
        key = input_key(out)
        if key in keys:
            raise DataError(out_dir, f"the annotated copy of {shown(p)} would overwrite the input "
                            f"{shown(keys[key])}: choose an --out folder outside the inputs")
        if key in owners:
            raise DataError(out_dir, f"{shown(owners[key])} and {shown(p)} would both be annotated as "
                            f"{shown(out)}: rename one of them")
        owners[key] = p
    return plan


def crop_paths(images: list[Path], inputs: list[str], out_dir: Path) -> dict[Path, Path]:
    """Each image's crop *base*: ``out_dir`` / its path relative to the folder holding all the
    inputs, name and extension kept (``a/x.jpg`` -> ``OUT/a/x.jpg``; crops add ``.faceK.png``),
    so two inputs never share a crop name."""
    root = inputs_root(inputs)
    return {p: out_dir / Path(os.path.abspath(p)).relative_to(root) for p in images}


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
