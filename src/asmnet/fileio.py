"""Atomic writes: a file is either its old version or its complete new one, never half-written.

Any failure to write (a read-only folder, no permission, a full disk) is an :class:`OutputError`
naming the file: one line, status 2 in the command line. :func:`check_writable_folder` and
:func:`check_writable_file` find such problems before a long job starts.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import OutputError, shown


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
