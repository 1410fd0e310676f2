"""Exception types of the package.

Every error that bad input can cause is an :class:`AsmnetError` whose message is one line that
names the file (and line, where there is one) and the problem. The command line prints that line
and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

from pathlib import Path


class AsmnetError(Exception):
    """Base class: a problem with input, a model file or a setting, described in one line."""


def shown(path: str | Path) -> str:
    """A path as error lines show it: control characters (a newline in a file name) escaped, so
    that one problem stays one line."""
    text = str(path)
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, at most ``limit`` characters, or the exception's
    type name when the message is empty: third-party errors (torch, onnxruntime, Pillow) can be
    pages long, and asmnet's errors are one line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


class DataError(AsmnetError):
    """An image, annotation or data folder that cannot be used."""

    def __init__(self, path: str | Path | None, problem: str, line: int | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.line = line
        where = "" if path is None else (f"{shown(path)}:{line}: " if line is not None else f"{shown(path)}: ")
        super().__init__(f"{where}{problem}")


class AsmnetWarning(UserWarning):
    """A note about a setting or a model that still works (e.g. a model without a quality
    threshold): a Python warning in the API, one ``asmnet: note:`` line in the command line."""


class SettingError(DataError, ValueError):
    """A setting (an argument of the Python API) of the wrong type or out of range: a DataError
    with the command line's one-line message, and a ValueError for code that caught those before."""


class DataNote(DataError):
    """A problem with an input that was still used (a face kept without its pose): reported in
    one line like a DataError, but not counted as a failed or skipped file."""


class OutputError(DataError):
    """An output file or folder that cannot be written (read-only, missing permission, full
    disk); ``errno`` is the operating system's error number, when there is one."""

    def __init__(self, path: str | Path | None, problem: str, errno: int | None = None):
        super().__init__(path, problem)
        self.errno = errno


class ModelError(AsmnetError):
    """A model file (checkpoint, ONNX, shape model) that is missing, corrupt or does not match."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{shown(path)}: {problem}" if path is not None else problem)
