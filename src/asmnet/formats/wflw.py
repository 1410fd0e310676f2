"""WFLW annotation lists (``list_98pt_rect_attr_*.txt``): one face per line.

A line holds 196 coordinates ``x0 y0 ... x97 y97``, the box ``x_min y_min x_max y_max``, six
attribute flags (0/1, in the order of :data:`WFLW_ATTRIBUTES`) and the image path relative to
the image root. Keys are ``"<root folder>/<image path without extension>#<k>"``, where k counts
the faces of one image in list order (1, 2, ...), since WFLW lists several faces per image.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

import numpy as np

from ..errors import DataError
from .face_record import FaceRecord, check_points
from .pts import parse_float, read_text_lines

WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "make-up", "occlusion", "blur")
WFLW_POINTS = 98
_N_NUMBERS = 2 * WFLW_POINTS + 4
_N_FIELDS = _N_NUMBERS + len(WFLW_ATTRIBUTES) + 1


def _parse_flags(tokens: list[str], path: str | Path, line: int) -> dict[str, int]:
    """The attribute flags as a dict; DataError unless each is exactly 0 or 1."""
    for token in tokens:
        if token not in ("0", "1"):
            raise DataError(path, f"attribute flag must be 0 or 1, found {token[:40]!r}", line)
    return {name: int(token) for name, token in zip(WFLW_ATTRIBUTES, tokens)}


def _record_key(root: Path, relative: str, counts: dict[str, int]) -> str:
    """Stable key of the next face of image ``relative``."""
    counts[relative] = counts.get(relative, 0) + 1
    stem = PurePath(relative.replace("\\", "/")).with_suffix("").as_posix()
    return f"{Path(os.path.abspath(root)).name}/{stem}#{counts[relative]}"


def _parse_line(text: str, path: str | Path, line: int, root: Path, counts: dict[str, int]) -> FaceRecord:
    """One face record from one list line."""
    tokens = text.split()
    if len(tokens) != _N_FIELDS:
        raise DataError(
            path,
            f"expected {_N_FIELDS} fields (196 coordinates, 4 box values, 6 attribute flags, "
            f"image path), found {len(tokens)}",
            line,
        )
    relative = tokens[-1]
    if not PurePath(relative.replace("\\", "/")).name:
        raise DataError(path, f"image path {relative[:80]!r} names no file", line)
    key = _record_key(root, relative, counts)  # counted before checks: keys survive a bad line
    numbers = np.asarray([parse_float(t, path, line) for t in tokens[:_N_NUMBERS]], dtype=np.float64)
    attributes = _parse_flags(tokens[_N_NUMBERS:-1], path, line)
    check_points(numbers[: 2 * WFLW_POINTS].reshape(WFLW_POINTS, 2), path, line)
    return FaceRecord(
        image=root / relative,
        points=numbers[: 2 * WFLW_POINTS].reshape(WFLW_POINTS, 2),
        box=numbers[2 * WFLW_POINTS :],
        attributes=attributes,
        key=key,
    )


def parse_wflw_list(
    path: str | Path, image_root: str | Path | None = None, check_images: bool = False
) -> tuple[list[FaceRecord], list[DataError]]:
    """All well-formed faces of a list, and the errors of the other lines.

    With ``check_images``, a face whose image file does not exist is an error too.
    """
    root = Path(image_root) if image_root is not None else Path(path).parent
    records: list[FaceRecord] = []
    errors: list[DataError] = []
    counts: dict[str, int] = {}
    for index, text in enumerate(read_text_lines(path, "WFLW list")):
        if not text.strip():
            continue
        try:
            record = _parse_line(text, path, index + 1, root, counts)
            if check_images and not record.image.is_file():
                raise DataError(path, f"image not found: {record.image}", index + 1)
            records.append(record)
        except DataError as exc:
            errors.append(exc)
    return records, errors


def read_wflw_list(path: str | Path, image_root: str | Path | None = None) -> list[FaceRecord]:
    """Read a WFLW list; image paths are relative to ``image_root`` (default: the list's folder).

    Raises DataError at the first malformed line. Images are not checked.
    """
    records, errors = parse_wflw_list(path, image_root)
    if errors:
        raise errors[0]
    return records


def subset(records: list[FaceRecord], attribute: str) -> list[FaceRecord]:
    """The records whose WFLW ``attribute`` flag is 1 (e.g. the "pose" subset)."""
    if attribute not in WFLW_ATTRIBUTES:
        raise ValueError(f"unknown WFLW attribute {attribute!r} (one of {', '.join(WFLW_ATTRIBUTES)})")
    return [record for record in records if record.attributes.get(attribute) == 1]
