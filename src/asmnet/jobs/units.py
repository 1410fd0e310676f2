"""The unit of work of each batch job: one image in, one result out, the same on every engine
(this process, a worker pool, a Ray actor), so that they all write the same records.

A unit of work is called as ``work(aligner, path, out)`` and returns a :data:`Result`:
(record, None, None) on success, (None, failure line, None) for a bad file (the job goes on),
(None, None, message) for a problem of the model or detector, which stops the job. It never
raises for a bad file.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from ..errors import AsmnetError, DataError, ModelError, OutputError, shown
from ..records import image_record, record_file, with_crops

Result = tuple[dict | None, str | None, str | None]
Work = Callable[[Any, str, str | None], Result]

# errors writing an output that every later output would meet too: the run stops at once
STOPPING_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line (OpenCV puts its message on the last line)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:160]}" if lines else type(exc).__name__


def named(path: str, exc: AsmnetError) -> str:
    """The error's line, starting with the input's name."""
    text = str(exc)
    return text if text.startswith(shown(path)) else f"{shown(path)}: {text}"


# -- asmnet predict ----------------------------------------------------------------------------
def predict_image(aligner: Any, path: str, out_file: str | None = None) -> Result:
    """``asmnet predict``'s unit: read one image, predict, and write its annotated copy to
    ``out_file`` when given; the record is :func:`asmnet.records.image_record`'s."""
    from ..api import at_full_size
    from ..formats.image import read_image_reduced

    try:
        image, full_size, factor = read_image_reduced(path)  # a huge photo is decoded reduced
        faces = aligner(image, channel_order="bgr")
    except ModelError as exc:
        return None, None, str(exc)
    except AsmnetError as exc:
        return None, named(path, exc), None
    except cv2.error as exc:
        return None, f"{shown(path)}: OpenCV failed ({one_line(exc)})", None
    except Exception as exc:  # noqa: BLE001 - one line per file; the batch goes on
        return None, f"{shown(path)}: unexpected error ({one_line(exc)})", None
    if out_file:
        from ..draw import draw_faces, write_image

        try:
            write_image(out_file, draw_faces(image, faces, pixel_origin=aligner.pixel_origin))
        except OutputError as exc:
            if exc.errno in STOPPING_ERRNOS:  # every later image would fail the same way
                return None, None, str(exc)
            return None, str(exc), None
        except DataError as exc:
            return None, str(exc), None
    if factor > 1:
        faces = [at_full_size(f, factor, aligner.pixel_origin) for f in faces]
    return image_record(path, None, full_size, faces, aligner.model.info.name, aligner.pixel_origin), None, None


# -- asmnet align ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CropSettings:
    """What ``asmnet align`` writes for each face, whichever engine runs it: the ``template``, the
    crop ``size`` in pixels, the file format ``fmt`` (``"png"`` or ``"jpg"``), and ``protected``:
    the resolved paths of the inputs a crop must never replace (see :func:`protected_inputs`)."""

    template: str
    size: int
    fmt: str = "png"
    protected: frozenset[str] = frozenset()
    skip_flagged: bool = False  # no crop for a face flagged as a likely failure (--skip-flagged)


def protected_inputs(images: list[Path], fmt: str) -> frozenset[str]:
    """The resolved paths of the ``images`` that a crop could replace: only those named like a
    crop (``NAME.faceK.FMT``), so the set stays small for any job (it goes to every Ray actor)."""
    crop_name = re.compile(rf".+\.face\d+\.{re.escape(fmt)}")
    return frozenset(real for real in map(os.path.realpath, images) if crop_name.fullmatch(os.path.basename(real)))


def _crop_target(crop_file: Path) -> str:
    """The directory entry a crop replaces: its folder resolved, its own name kept (crops are
    written atomically, by a rename, so a link already there is replaced, never followed)."""
    return os.path.join(os.path.realpath(crop_file.parent), crop_file.name)


def align_file(aligner: Any, path: str | Path, base: Path, crops: CropSettings) -> dict:
    """Align the faces of one image file and write each crop as ``BASE.faceK.FMT`` (atomically);
    returns its record (:func:`asmnet.records.with_crops`: ``predict``'s record with the ``template``,
    ``size``, and each face's ``crop``, ``matrix`` and ``crop_landmarks``;
    with ``crops.skip_flagged`` the flagged faces have neither crop nor record).
    Raises DataError for an unreadable image or a crop path that is one of the ``protected``
    (input) files, OSError when a crop cannot be written."""
    from ..draw import write_image
    from ..formats import read_image

    image = read_image(path)
    aligned = aligner.align(image, size=crops.size, template=crops.template, channel_order="bgr",
                            skip_flagged=crops.skip_flagged)
    placed_crops = []
    for k, item in enumerate(aligned):
        crop_file = base.with_name(f"{base.name}.face{k}.{crops.fmt}")
        if _crop_target(crop_file) in crops.protected:
            raise DataError(crop_file, "a crop would overwrite an input: choose an --out folder outside the inputs")
        write_image(crop_file, item.image)
        placed = item.to_dict()
        placed_crops.append({"crop": record_file(crop_file), "matrix": placed["matrix"],
                             "crop_landmarks": placed["crop_landmarks"]})
    record = image_record(path, None, (image.shape[1], image.shape[0]), [item.face for item in aligned],
                          aligner.model.info.name, aligner.pixel_origin)
    return with_crops(record, crops.template, crops.size, placed_crops)  # predict's record, plus the crops


def align_task(aligner: Any, path: str, base: str | Path, crops: CropSettings) -> Result:
    """``asmnet align``'s unit: align ``path`` and write its crops beside ``base`` (see
    :func:`align_file`); a crop that cannot be written is a failure line."""
    try:
        return align_file(aligner, path, Path(base), crops), None, None
    except ModelError as exc:
        return None, None, str(exc)
    except AsmnetError as exc:
        text = str(exc)
        return None, (text if text.startswith(str(path)) or getattr(exc, "path", None) else f"{path}: {text}"), None
    except OSError as exc:
        return None, f"{base}: cannot write a crop ({exc.strerror or exc})", None
    except cv2.error as exc:
        return None, f"{path}: OpenCV failed ({one_line(exc)})", None
    except Exception as exc:  # noqa: BLE001 - one line per file; the job goes on
        return None, f"{path}: unexpected error ({one_line(exc)})", None


def align_work(crops: CropSettings) -> Work:
    """``asmnet align``'s unit with these crop settings, as the engines call it (picklable, for
    worker processes and Ray actors)."""
    return functools.partial(align_task, crops=crops)
