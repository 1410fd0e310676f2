"""The annotated faces a benchmark scores: those of a key list (e.g. a validation split) found in
the ``--data`` folders, with their images; and how such a benchmark ends on bad input (one line).
Scripts run as ``python benchmarks/NAME.py`` import it as ``from validation_set import ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

from asmnet.errors import AsmnetError, first_line
from asmnet.evaluation import read_keys
from asmnet.formats import FaceRecord, load_many, read_image


def validation_faces(data: list[str], keys: str) -> tuple[list[FaceRecord], list[np.ndarray]]:
    """The records of ``data`` whose key is listed in the file ``keys``, and their BGR images.
    Raises :class:`AsmnetError` (one line) when the list or the images cannot be read, or no face matches."""
    wanted = read_keys(keys)
    records = [r for r in load_many(data)[0] if r.key in wanted]
    if not records:
        raise AsmnetError(f"no face of {keys} in {', '.join(data)}")
    return records, [read_image(r.image) for r in records]


def run_reporting_errors(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``; a missing key list, model or detector is one line on stderr and status 1."""
    try:
        return run(args)
    except AsmnetError as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
