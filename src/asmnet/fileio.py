"""Safe reads of small files, and atomic writes.

Reads: :func:`read_small_bytes`, :func:`read_small_text` and :func:`read_small_json` are the one
way asmnet reads a text or JSON file it is handed (``model.json``, ``.pts``, ``pose.csv``, key
lists, ...): only regular files (a FIFO or ``/dev/zero`` would block or never end), at most
:data:`SMALL_FILE_MAX_BYTES`, JSON nested at most :data:`MAX_JSON_DEPTH` levels (deeper input made
``json`` raise RecursionError); each problem is one line naming the file. :func:`parse_json` is
``json.loads`` without the RecursionError, for JSON text from elsewhere (a JSON Lines record).

Writes: a file is either its old version or its complete new one, never half-written. Any failure
to write (a read-only folder, no permission, a full disk) is an :class:`OutputError` naming the
file: one line, status 2 in the command line. :func:`check_writable_folder` and
:func:`check_writable_file` find such problems before a long job starts.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import AsmnetError, DataError, OutputError, shown

# The largest text or JSON file asmnet reads whole: the shipped model.json files are ~90 kB, a
# 300W-LP pose.csv ~5 MB, a WFLW list ~15 MB.
SMALL_FILE_MAX_BYTES = 64 * 1024 * 1024
# Deeper JSON is refused: asmnet's own files nest at most 7 levels; Python's json module raises
# RecursionError near 1,000.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def read_small_bytes(path: str | Path, what: str = "file", max_bytes: int = SMALL_FILE_MAX_BYTES,
                     error: type[AsmnetError] = DataError) -> bytes:
    """The whole content of the regular file ``path``, at most ``max_bytes`` long.

    Raises ``error(path, problem)`` (DataError by default; ModelError for model files) naming
    ``what`` the file was meant to be, when it does not exist, is not a regular file (a folder,
    a FIFO, a device such as /dev/zero: refused without reading), cannot be read or is longer.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore the flag)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(path, "no such file") from None
    except OSError as exc:
        raise error(path, f"cannot read {what}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, device or socket)"
            raise error(path, f"{kind}, expected a {what}")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise error(path, f"cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise error(path, f"cannot read {what}: larger than the limit of {max_bytes} bytes")
    return b"".join(chunks)


def read_small_text(path: str | Path, what: str = "text file", max_bytes: int = SMALL_FILE_MAX_BYTES,
                    error: type[AsmnetError] = DataError) -> str:
    """:func:`read_small_bytes` decoded as UTF-8 (a byte-order mark is dropped); ``error`` also
    when the bytes are not UTF-8 (naming the line)."""
    data = read_small_bytes(path, what, max_bytes, error)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(path, f"cannot read {what}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None


def read_small_json(path: str | Path, what: str = "JSON file", max_bytes: int = SMALL_FILE_MAX_BYTES,
                    error: type[AsmnetError] = DataError) -> object:
    """The JSON value of a small file (see :func:`read_small_text`); ``error`` also for text that
    is not JSON or nests deeper than :data:`MAX_JSON_DEPTH`."""
    text = read_small_text(path, what, max_bytes, error)
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise error(path, f"cannot read {what}: JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH})")
    try:
        return parse_json(text)
    except json.JSONDecodeError as exc:
        raise error(path, f"cannot read {what}: not JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None


def parse_json(text: str) -> object:
    """``json.loads(text)``, except that JSON nested too deeply for Python's parser raises
    json.JSONDecodeError (a ValueError), as any other text that is not JSON does, instead of
    RecursionError. For JSON read line by line (a JSON Lines record); files: :func:`read_small_json`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def json_depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest (0 for a bare value), counted on
    the brackets outside strings without parsing, so without recursion."""
    brackets = np.frombuffer(_NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode("ascii"), np.uint8)
    if not len(brackets):
        return 0
    opening = (brackets == ord("[")) | (brackets == ord("{"))
    return max(int(np.cumsum(np.where(opening, 1, -1)).max()), 0)


def _output_error(path: str | Path, exc: OSError, what: str = "cannot write") -> OutputError:
    return OutputError(path, f"{what} ({exc.strerror or exc})", exc.errno)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over.

    Missing parent folders are created. The one atomic writer of asmnet: every file written whole
    goes through it (JSON Lines and annotated videos are streamed as they are made). Raises
    OutputError when the folder or file cannot be written (``path`` is then unchanged and the
    temporary file removed), and whatever else ``write`` raises.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _output_error(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        raise _output_error(path, exc) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def check_writable_folder(folder: str | Path) -> None:
    """Create ``folder`` (and its parents) and check that a file can be made in it; OutputError
    otherwise. For long jobs: a read-only output fails before the work, not after it."""
    _probe(Path(folder), Path(folder))


def check_writable_file(path: str | Path) -> None:
    """OutputError unless ``path`` can be written by :func:`write_atomic` (its folder can be
    made and written in, and it is not a folder)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, "is a folder, expected a file name")
    _probe(path.parent, path)


def _probe(folder: Path, named: Path) -> None:
    """Make ``folder`` and a temporary file in it; OutputError naming ``named`` when that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".asmnet-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        # "File exists" / "Not a directory" say little: name the file that stands in the way
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        why = f"{shown(blocker)} is a file, not a folder" if blocker is not None else (exc.strerror or str(exc))
        raise OutputError(named, f"cannot write here ({why})", exc.errno) from None


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically; OutputError when it cannot be written."""
    write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def json_ready(value: object) -> object:
    """``value`` with every NaN or infinite float replaced by None (JSON ``null``): JSON has no
    NaN, and a file with one is unreadable by strict parsers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def json_text(value: object, **kwargs) -> str:
    """``json.dumps`` that never writes NaN: non-finite numbers become ``null``."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(json_ready(value), allow_nan=False, **kwargs)


def write_json_atomic(path: str | Path, data: object) -> None:
    """Write ``data`` as indented JSON atomically (NaN and infinities as ``null``); OutputError
    when it cannot be written, ``TypeError`` for values JSON cannot hold."""
    write_text_atomic(path, json_text(data, indent=2, sort_keys=False) + "\n")
