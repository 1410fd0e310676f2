"""The output record: one JSON object per image or video frame, the one format written by
``asmnet predict --json`` (local workers and the Ray engine alike), ``asmnet align``'s index and
``asmnet demo``, and read back by ``asmnet predict --resume``::

    {"schema": 1, "file": "/home/me/photos/a.jpg", "frame": null, "image_size": [640, 480],
     "model": "default", "pixel_origin": 0.0, "faces": [FACE, ...]}

``file`` is the input's absolute path (made absolute against the working folder, links kept as
named), so that a record means the same file whatever folder a later run starts in; a camera
is its index (``"0"``). Video frames add ``track_ids``; ``asmnet align`` adds ``template`` and
``size``, and to each face ``crop``, ``matrix`` and ``crop_landmarks``. ``schema`` goes up when a
key changes meaning or disappears.

This module imports nothing of the pipeline (faces come in as anything with ``to_dict()``), so
every command can build records here without import cycles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError, shown
from .fileio import json_text, parse_json

SCHEMA = 1
# key -> the JSON types it may hold; a line without these is not an asmnet record
REQUIRED_KEYS: dict[str, tuple[type, ...]] = {
    "file": (str,), "frame": (int, type(None)), "image_size": (list,), "model": (str,),
    "pixel_origin": (int, float), "faces": (list,),
}
# how the records of this and earlier versions begin: a line cut short by a full disk or a
# kill starts like one of these (record_text keeps the key order)
RECORD_STARTS = ('{"schema": ', '{"file": ')


class RecordError(ValueError):
    """A JSON Lines line that is not an asmnet record; the message says why."""


def record_file(source: str | Path | int) -> str:
    """The ``file`` of a record: a path made absolute (links kept as named), a camera index as text."""
    return str(source) if isinstance(source, int) else os.path.abspath(source)


def image_record(source: str | Path | int, frame: int | None, image_size: tuple[int, int], faces: Iterable[Any],
                 model: str, pixel_origin: float, track_ids: list[int] | None = None) -> dict[str, Any]:
    """The record of one image (``frame`` None) or video frame: ``image_size`` is (width, height),
    ``faces`` anything with ``to_dict()`` (:class:`asmnet.api.Face`), ``track_ids`` a video's."""
    record = {"schema": SCHEMA, "file": record_file(source), "frame": frame,
              "image_size": [int(image_size[0]), int(image_size[1])], "model": model,
              "pixel_origin": float(pixel_origin), "faces": [face.to_dict() for face in faces]}
    if track_ids is not None:
        record["track_ids"] = [int(i) for i in track_ids]
    return record


def with_crops(record: dict[str, Any], template: str, size: int, crops: list[dict[str, Any]]) -> dict[str, Any]:
    """``asmnet align``'s record: an image ``record`` plus the ``template`` and crop ``size``, and
    each face's crop (``crops[k]``: its ``crop`` file, ``matrix`` and ``crop_landmarks``)."""
    if len(crops) != len(record["faces"]):
        raise ValueError(f"{len(crops)} crops for {len(record['faces'])} faces")
    return {**record, "template": template, "size": int(size),
            "faces": [{**face, **crop} for face, crop in zip(record["faces"], crops)]}


def record_text(record: dict[str, Any]) -> str:
    """The record as one line of JSON (no newline; non-finite numbers as ``null``)."""
    return json_text(record)


def read_record(line: str) -> dict[str, Any]:
    """The record of one JSON Lines line; RecordError when the line is not an asmnet record
    (not JSON, not an object, a key missing or of the wrong type, a newer schema)."""
    try:
        record = parse_json(line)  # deep nesting: JSONDecodeError, not RecursionError
    except json.JSONDecodeError as exc:
        raise RecordError(f"not JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise RecordError(f"a JSON {type(record).__name__}, not an object")
    schema = record.get("schema", 0)  # records of asmnet before the schema field: 0
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 0:
        raise RecordError(f"schema {schema!r} is not a version number")
    if schema > SCHEMA:
        raise RecordError(f"written by a newer asmnet (schema {schema}; this one reads up to {SCHEMA})")
    for key, types in REQUIRED_KEYS.items():
        if key not in record:
            raise RecordError(f"no {key!r}")
        value = record[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise RecordError(f"{key!r} is {json.dumps(value)[:40]}")
    return record


def record_key(record: dict[str, Any]) -> tuple[str, int | None]:
    """What identifies a record's input: (the file's resolved path, the frame). Records before
    schema 1 may hold relative paths: they resolve against the working folder."""
    return os.path.realpath(record["file"]), record["frame"]


@dataclass
class RecordsFile:
    """What ``--resume`` needs of an existing JSON Lines file (see :func:`read_records_file`)."""

    keys: set[tuple[str, int | None]] = field(default_factory=set)  # record_key of every record
    settings: set[tuple[str, float]] = field(default_factory=set)  # (model, pixel_origin) of the records
    complete_bytes: int = 0  # the file's length up to the end of its last complete record
    torn_tail: bool = False  # a record cut short at the end (by a kill or a full disk), to drop
    missing_newline: bool = False  # the last record is whole but its newline was never written


def read_records_file(path: str | Path) -> RecordsFile:
    """Read a JSON Lines file of records for ``--resume``. Blank lines are allowed; a last line
    without its newline that starts like a record but does not parse is a torn write (``torn_tail``).
    Raises DataError naming the file and line for any other line that is not a record, so that
    a file of someone else's lines is never appended to, nor cut."""
    path = Path(path)
    found = RecordsFile()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise DataError(path, f"cannot read the JSON Lines output ({exc.strerror or exc})") from None
    lines = data.split(b"\n")  # the last item is what follows the last newline ("" normally)
    offset = 0
    for number, raw in enumerate(lines, 1):
        last = number == len(lines)
        end = offset + len(raw) + (0 if last else 1)
        if raw.strip():
            text = raw.decode("utf-8", errors="replace")
            try:
                record = read_record(text)
            except RecordError as exc:
                if last and _starts_like_a_record(text):
                    found.torn_tail = True
                    return found
                raise DataError(path, f"not an asmnet record ({exc}): --resume appends only to a file of "
                                "asmnet records, and leaves this one as it is; write to another --json file",
                                line=number) from None
            found.keys.add(record_key(record))
            found.settings.add((record["model"], float(record["pixel_origin"])))
            found.missing_newline = last
            found.complete_bytes = end
        elif not last:
            found.complete_bytes = end
        offset = end
    return found


def _starts_like_a_record(text: str) -> bool:
    return any(text[: len(start)] == start[: len(text)] for start in RECORD_STARTS)


def check_same_settings(path: str | Path, found: RecordsFile, model: str, pixel_origin: float) -> None:
    """DataError when the records of ``path`` were made by another model or in another pixel
    convention than this run's: one file must not mix them."""
    other = sorted(s for s in found.settings if s != (model, float(pixel_origin)))
    if other:
        theirs = ", ".join(f"model {m!r} with pixel origin {o:g}" for m, o in other)
        raise DataError(path, f"holds records of {theirs}, this run is model {model!r} with pixel origin "
                        f"{float(pixel_origin):g}: resume with the same --model and --pixel-origin, or write "
                        "to another --json file")


# -- what a person reads ------------------------------------------------------------------------
def face_line(index: int, face: dict[str, Any]) -> str:
    """One face of a record in words: box, pose, quality, and whether it is flagged."""
    box = "[" + ", ".join(f"{v:.0f}" for v in face["box"]) + "]"
    pose = face["pose"]
    quality = face.get("quality")
    text = (f"face {index}: box {box}, yaw {pose['yaw']:+.1f}, pitch {pose['pitch']:+.1f}, roll {pose['roll']:+.1f} deg"
            + ("" if quality is None else f", quality {quality:.2f}"))
    return text + (" (flagged: likely wrong)" if face.get("flagged") else "")


def summary_lines(record: dict[str, Any], name: str | None = None) -> list[str]:
    """An image's record in words: ``NAME: N faces`` and a line per face (see :func:`face_line`)."""
    faces = record["faces"]
    flagged = sum(bool(f.get("flagged")) for f in faces)
    head = f"{shown(name if name is not None else record['file'])}: {count(len(faces), 'face')}"
    return [head + (f", {flagged} flagged" if flagged else "")] + [f"  {face_line(i, f)}" for i, f in enumerate(faces)]


def count(n: int, noun: str) -> str:
    """``1 face``, ``2 faces``, ``no face``."""
    return f"no {noun}" if n == 0 else f"{n} {noun}{'' if n == 1 else 's'}"


__all__ = ["SCHEMA", "RecordError", "RecordsFile", "check_same_settings", "face_line", "image_record",
           "read_record", "read_records_file", "record_file", "record_key", "record_text", "summary_lines",
           "with_crops"]
