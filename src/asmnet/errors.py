"""Exception types of the package.

Every error that bad input can cause is an :class:`AsmnetError` whose message is one line that
names the file (and line, where there is one) and the problem. The command line prints that line
and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

from pathlib import Path


class AsmnetError(Exception):
    """Base class: a problem with input, a model file or a setting, described in one line."""


class DataError(AsmnetError):
    """An image, annotation or data folder that cannot be used."""

    def __init__(self, path: str | Path | None, problem: str, line: int | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.line = line
        where = "" if path is None else (f"{path}:{line}: " if line is not None else f"{path}: ")
        super().__init__(f"{where}{problem}")


class ModelError(AsmnetError):
    """A model file (checkpoint, ONNX, shape model) that is missing, corrupt or does not match."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)
