"""The stamp every benchmark result JSON carries: the command, the commit, the date and the machine.

A benchmark script calls ``stamp(result)`` on the dict it is about to write; the result keeps all
its own keys and gains one more, ``"stamp"``::

    {"command": "python benchmarks/large_image.py --out benchmarks/results/large_image.json",
     "commit": "f7b4544...", "dirty": false, "date": "2026-12-08T10:12:03Z",
     "machine": {"host": "...", "platform": "Linux-...", "python": "3.11.9", "cpu": "...", "cpus": 2,
                 "load": [1.2, 1.0, 0.9]}}

``commit`` is ``null`` outside a git checkout; ``dirty`` says whether tracked files differed from it.
Scripts run as ``python benchmarks/NAME.py`` import it as ``from stamp import stamp``.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_stamp(argv: list[str] | None = None) -> dict:
    """The stamp alone: the command line (``sys.argv`` unless given), commit, UTC date, machine."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(".py"):
        try:
            argv[0] = str(Path(argv[0]).resolve().relative_to(ROOT))
        except ValueError:
            pass
        argv = ["python", *argv]
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {
        "command": shlex.join(argv),
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
                    "cpu": _cpu_name(), "cpus": os.cpu_count(), "load": load},
    }


def stamp(result: dict, argv: list[str] | None = None) -> dict:
    """``result`` with ``"stamp"`` added (see the module's docstring); the same dict, changed in place."""
    result["stamp"] = run_stamp(argv)
    return result
