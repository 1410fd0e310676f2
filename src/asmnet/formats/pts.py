"""iBUG ``.pts`` landmark files (300W layout).

The package uses ``.pts`` coordinates exactly as written: no 1-based to 0-based shift is applied
on reading or writing, so predictions come out in the convention of the training files (for
300W/LFPW, conventionally 1-based Matlab pixels).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import read_small_bytes, write_text_atomic

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def read_text_lines(path: str | Path, what: str = "text file") -> list[str]:
    """The lines of a small UTF-8 text file (BOM, CRLF and CR tolerated); DataError naming the
    file when it is missing, not a regular file, too large (:func:`~asmnet.fileio.read_small_bytes`),
    not UTF-8 (naming the line) or empty."""
    data = read_small_bytes(path, what)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(path, f"not UTF-8 text (byte 0x{data[exc.start]:02x})", line) from None
    if not text.strip():
        raise DataError(path, "empty file")
    return _LINE_BREAK.split(text)


def parse_float(token: str, path: str | Path, line: int) -> float:
    """``token`` as a finite float; DataError naming the line otherwise."""
    try:
        if "_" in token:
            raise ValueError(token)
        value = float(token)
    except ValueError:
        raise DataError(path, f"not a number: {token[:40]!r}", line) from None
    if not math.isfinite(value):
        raise DataError(path, f"value is not finite: {token[:40]!r}", line)
    return value


def _parse_header(lines: list[str], path: str | Path) -> tuple[int, int | None, int | None]:
    """Index of the ``{`` line, the ``n_points`` header value and its line number."""
    declared: int | None = None
    declared_line: int | None = None
    for index, raw in enumerate(lines):
        text = raw.strip()
        number = index + 1
        if not text:
            continue
        if text == "{":
            return index, declared, declared_line
        key, sep, value = text.partition(":")
        key = key.strip().lower()
        if not sep:
            raise DataError(path, "missing '{' before the points", number)
        if key == "n_points":
            if declared is not None:
                raise DataError(path, "n_points given twice", number)
            declared, declared_line = _parse_count(value.strip(), path, number), number
        elif key != "version":
            raise DataError(path, f"unexpected header line {text[:40]!r}", number)
    raise DataError(path, "missing '{' before the points", _last_line(lines))


def _parse_count(value: str, path: str | Path, line: int) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value):
        raise DataError(path, f"n_points is not a valid count: {value[:40]!r}", line)
    return int(value)


def _parse_body(lines: list[str], start: int, path: str | Path) -> tuple[list[list[float]], int]:
    """Point rows after the ``{`` line at ``start``, and the line number of ``}``."""
    rows: list[list[float]] = []
    for index in range(start + 1, len(lines)):
        text = lines[index].strip()
        number = index + 1
        if not text:
            continue
        if text == "}":
            _check_trailer(lines, index, path)
            return rows, number
        tokens = text.split()
        if len(tokens) != 2:
            raise DataError(path, f"expected 2 values (x y), found {len(tokens)}", number)
        rows.append([parse_float(token, path, number) for token in tokens])
    raise DataError(path, "missing '}' after the points", _last_line(lines))


def _last_line(lines: list[str]) -> int:
    """Number of the last non-blank line (1-based)."""
    return max((i + 1 for i, text in enumerate(lines) if text.strip()), default=1)


def _check_trailer(lines: list[str], close: int, path: str | Path) -> None:
    for index in range(close + 1, len(lines)):
        if lines[index].strip():
            raise DataError(path, "unexpected text after '}'", index + 1)


def read_pts(path: str | Path, n_points: int | None = None) -> np.ndarray:
    """Read an iBUG ``.pts`` file: float64 array (N, 2) of x, y exactly as written.

    ``n_points``, when given, is the number of points the file must hold.
    """
    lines = read_text_lines(path, ".pts file")
    open_index, declared, declared_line = _parse_header(lines, path)
    rows, close_line = _parse_body(lines, open_index, path)
    where = declared_line if declared_line is not None else open_index + 1
    if declared is not None and declared != len(rows):
        raise DataError(path, f"n_points is {declared} but {len(rows)} points follow", where)
    if not rows:
        raise DataError(path, "no points between '{' and '}'", close_line)
    if n_points is not None and len(rows) != n_points:
        raise DataError(path, f"has {len(rows)} points, expected {n_points}", where)
    return np.asarray(rows, dtype=np.float64)


def format_pts(points: np.ndarray) -> str:
    """The text of a ``.pts`` file holding ``points`` (3 decimals)."""
    body = "".join(f"{x:.3f} {y:.3f}\n" for x, y in points)
    return f"version: 1\nn_points: {len(points)}\n{{\n{body}}}\n"


def write_pts(path: str | Path, points: np.ndarray) -> None:
    """Write ``points`` (N, 2) as a ``.pts`` file with 3 decimals, atomically."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise DataError(path, f"cannot write points of shape {array.shape}, expected (N, 2)")
    if not np.isfinite(array).all():
        raise DataError(path, "cannot write non-finite points")
    try:
        write_text_atomic(path, format_pts(array))
    except OSError as exc:
        raise DataError(path, f"cannot write: {exc.strerror or exc}") from None
