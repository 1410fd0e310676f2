"""The JSON Lines output of a batch job: records streamed to a file (made at the first record)
or to standard output, and with ``--resume`` the file read back first: its inputs are skipped,
a record cut short at its end is dropped, and records of another model or pixel origin refuse
the run."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import TextIO

from ..api import AlignerSettings
from ..errors import DataError, OutputError
from ..fileio import check_writable_file
from ..records import RecordsFile, check_same_settings, read_records_file, record_text
from .inputs import input_key

STDOUT = "-"  # the JSON Lines path meaning standard output


class RecordSink:
    """Where a run's records go: a JSON Lines file, made (or with ``resume`` appended to) at the
    first record, so that a run that writes none leaves no file and an existing one as it was;
    standard output (``path == "-"``); or nowhere (``path`` None).

    ``existing``: what ``--resume`` found in the file (see :meth:`repair`)."""

    def __init__(self, path: str | None, resume: bool = False, existing: RecordsFile | None = None):
        self.path, self.resume, self.existing = path, resume, existing or RecordsFile()
        self.stream: TextIO | None = sys.stdout if path == STDOUT else None
        self.name = "standard output" if path == STDOUT else path

    def write(self, record: dict) -> None:
        """Append one record and flush it; OutputError (which stops the run) when that fails. A
        line cut short by a full disk is dropped by the next ``--resume``."""
        if self.path is None:
            return
        try:
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(record_text(record) + "\n")
            self.stream.flush()
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and self.path == STDOUT:
                _stdout_to_devnull()  # the reader left (e.g. `| head`): no second error at exit
            raise OutputError(self.name, f"cannot write the JSON Lines output ({exc.strerror or exc})",
                              exc.errno) from None

    def repair(self) -> None:
        """Drop the record an interrupted write cut short at the end of the ``resume`` file (its
        input runs again), and end a whole last record that lacks it with its newline; every
        other byte stays as it was. OutputError when the file cannot be changed."""
        try:
            if self.existing.torn_tail:
                os.truncate(self.path, self.existing.complete_bytes)
            if self.existing.missing_newline:
                with open(self.path, "a", encoding="utf-8") as stream:
                    stream.write("\n")
        except OSError as exc:
            raise OutputError(self.path, f"cannot write the JSON Lines output ({exc.strerror or exc})",
                              exc.errno) from None
        self.existing.torn_tail = self.existing.missing_newline = False

    def _open(self) -> TextIO:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a" if self.resume else "w", encoding="utf-8")

    def close(self) -> None:
        if self.stream is not None and self.stream is not sys.stdout:
            try:
                self.stream.close()
            except OSError:
                pass  # a full disk: already reported by write; --resume drops a half-written line


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def open_record_sink(path: str | None, resume: bool, settings: AlignerSettings, input_keys: set[str]) -> RecordSink:
    """The run's :class:`RecordSink` for the JSON Lines ``path``, after every check that can be
    made before the work: the file is writable and no input, and with ``resume`` holds only
    records of the model and pixel origin of ``settings`` (their inputs are then skipped).
    Raises DataError or OutputError when a check fails, ModelError when the model cannot be loaded."""
    if not path or path == STDOUT:
        return RecordSink(path)
    if input_key(path) in input_keys:
        raise DataError(path, "--json names an input file: it would be overwritten")
    check_writable_file(path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise OutputError(path, "cannot write the JSON Lines output (Permission denied)", errno.EACCES)
    if not resume:
        return RecordSink(path)
    existing = read_records_file(path)
    if existing.settings:
        check_same_settings(path, existing, _model_name(settings), settings.pixel_origin)
    sink = RecordSink(path, resume=True, existing=existing)
    sink.repair()
    return sink


def _model_name(settings: AlignerSettings) -> str:
    """The name the records of ``settings.model`` carry (the model is loaded, not the detector)."""
    from ..runtime import load_model

    return load_model(settings.model, backend=settings.backend, threads=1).info.name
