"""Issue 25.16 and 25.21: asmnet train never replaces a run it was not asked to, and a full disk
is one line and status 2 (the previous last.pt kept)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

from asmnet.cli import main  # noqa: E402

pytestmark = pytest.mark.slow  # a training run / subprocesses: left out of pytest -m "not slow"

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--input-size", "64", "--width", "0.5", "--batch-size", "4", "--workers", "0", "--device", "cpu",
        "--val-fraction", "0.2", "--shape-passes", "2", "--warmup-epochs", "0"]


def train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), "--epochs", "2", *TINY, *extra])


def errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("asmnet: error")]


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(synthetic_set, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert train(synthetic_set, out, "--stop-after", "1") == 0
    before = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt")}
    mine = out / ".my notes.tmp"  # a user's file that looks like a temporary: not the run's
    mine.write_text("keep me")
    assert train(synthetic_set, out) == 2
    (line,) = errors(capsys)
    assert "holds a run (last.pt, best.pt): --resume continues it, --overwrite replaces it" in line
    assert {name: (out / name).read_bytes() for name in before} == before and mine.read_text() == "keep me"
    # a torn write of the run's own (a killed run's temporary) is cleared, the user's file is not
    torn = out / ".last.pt.abc123.tmp"
    torn.write_bytes(b"half")
    assert train(synthetic_set, out, "--resume") == 0  # continues: epoch 2 of 2
    assert not torn.exists() and mine.exists()
    assert train(synthetic_set, out, "--overwrite", "--stop-after", "1") == 0
    assert (out / "last.pt").read_bytes() != before["last.pt"] and mine.exists()
    # best.pt alone (no last.pt to resume from) is still a run
    (out / "last.pt").unlink()
    assert train(synthetic_set, out, "--resume") == 2
    assert "has best.pt but no last.pt to resume from" in errors(capsys)[0]


def test_a_full_disk_is_one_line_and_status_2_and_the_last_checkpoint_survives(synthetic_set, tmp_path) -> None:
    out = tmp_path / "run"
    assert train(synthetic_set, out, "--stop-after", "1") == 0
    last = (out / "last.pt").read_bytes()
    # the file size limit makes every write beyond it fail as a full disk does (torch.save: "unexpected pos")
    limit = len(last) // 2
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from asmnet.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    argv = ["train", "--data", str(synthetic_set), "--out", str(out), "--epochs", "2", "--resume", *TINY]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    res = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.startswith("asmnet:") or "Traceback" in line]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and "last.pt: cannot write (PyTorch could not write the file; is the disk full?" in lines[0]
    assert "Traceback" not in res.stderr
    assert (out / "last.pt").read_bytes() == last
    assert not list(out.glob(".last.pt.*.tmp"))
