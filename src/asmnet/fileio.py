"""Atomic writes: a file is either its old version or its complete new one, never half-written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over.

    Missing parent folders are created. The one atomic writer of asmnet: every file written whole
    goes through it (JSON Lines and annotated videos are streamed as they are made). Raises
    ``OSError`` when the folder or file cannot be written (the temporary file is removed), and
    whatever ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically; ``OSError`` when it cannot be written."""
    write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, data: object) -> None:
    """Write ``data`` as indented JSON atomically; ``OSError`` when it cannot be written,
    ``TypeError`` for values JSON cannot hold."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
