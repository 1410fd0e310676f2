"""``pose.csv`` head-pose labels: ``stem,yaw,pitch,roll`` in degrees (300W-LP convention)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import DataError
from .pts import parse_float, read_text_lines

POSE_COLUMNS = ("stem", "yaw", "pitch", "roll")


def _column_indices(header: list[str], path: str | Path, line: int) -> list[int]:
    """Positions of stem, yaw, pitch, roll in ``header`` (any order, extra columns allowed)."""
    names = [name.strip().lower() for name in header]
    missing = [name for name in POSE_COLUMNS if name not in names]
    if missing:
        raise DataError(path, f"header lacks column(s) {', '.join(missing)} (need stem,yaw,pitch,roll)", line)
    for name in POSE_COLUMNS:
        if names.count(name) > 1:
            raise DataError(path, f"column {name!r} appears twice in the header", line)
    return [names.index(name) for name in POSE_COLUMNS]


def _parse_row(
    row: list[str], width: int, columns: list[int], path: str | Path, line: int
) -> tuple[str, np.ndarray]:
    """(stem, [yaw, pitch, roll]) from one data row."""
    if len(row) != width:
        raise DataError(path, f"expected {width} fields, found {len(row)}", line)
    stem = row[columns[0]].strip()
    if not stem:
        raise DataError(path, "empty stem", line)
    angles = [parse_float(row[i].strip(), path, line) for i in columns[1:]]
    return stem, np.asarray(angles, dtype=np.float64)


def read_pose_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Map each stem to a float64 array [yaw, pitch, roll] in degrees."""
    lines = read_text_lines(path, "pose.csv file")
    reader = csv.reader(lines)
    try:
        header = next((row for row in reader if any(field.strip() for field in row)), None)
        if header is None:
            raise DataError(path, "no header line (need stem,yaw,pitch,roll)")
        columns = _column_indices(header, path, reader.line_num)
        poses: dict[str, np.ndarray] = {}
        first_line: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not any(field.strip() for field in row):
                continue
            stem, angles = _parse_row(row, len(header), columns, path, line)
            if stem in poses:
                raise DataError(path, f"stem {stem!r} repeats line {first_line[stem]}", line)
            poses[stem], first_line[stem] = angles, line
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV: {exc}", reader.line_num) from None
    return poses
