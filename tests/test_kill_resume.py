"""Training survives ``kill -9``: `asmnet train` is killed at random points (mid-epoch, and while
last.pt is being written), resumed with --resume until done, and must end with exactly the weights
of an uninterrupted run. At every kill point last.pt either does not exist yet or loads; a
truncated or corrupt checkpoint is one clear line from `asmnet evaluate` (exit 2).

Both runs use one thread (OMP_NUM_THREADS=1): bit-equality needs the same reduction order, and
on a loaded 2-core machine more threads make these tiny steps far slower.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_synthetic_set

from asmnet.cli import main
from asmnet.nn.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # a training run / subprocesses: left out of pytest -m "not slow"

EPOCHS = 4
TIMEOUT = 120.0  # seconds for any one process: far beyond what the run needs


def train_command(data: Path, out: Path, resume: bool) -> list[str]:
    args = ["train", "--data", str(data), "--out", str(out), "--input-size", "64", "--width", "0.5",
            "--workers", "0", "--epochs", str(EPOCHS), "--batch-size", "4", "--warmup-epochs", "1",
            "--val-fraction", "0.2", "--device", "cpu"]
    return [sys.executable, "-m", "asmnet", *args, *(["--resume"] if resume else [])]


def start(data: Path, out: Path, resume: bool, log: Path) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "ab") as sink:
        return subprocess.Popen(train_command(data, out, resume), stdout=sink, stderr=subprocess.STDOUT, env=env)


def wait_until(proc: subprocess.Popen, condition, poll: float = 0.0005) -> bool:
    """Poll ``condition`` until it holds (True) or the process ends (False)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    proc.kill()
    raise AssertionError("the training process neither reached the kill point nor ended in time")


def writing_last(out: Path) -> bool:
    """Whether a temporary last.pt (being written) is in the run folder now."""
    try:
        return any(name.startswith(".last.pt.") and name.endswith(".tmp") for name in os.listdir(out))
    except FileNotFoundError:
        return False


def stray_temporaries(out: Path) -> set[str]:
    return {name for name in os.listdir(out) if name.startswith(".last.pt.") and name.endswith(".tmp")}


def checkpoint_epoch(out: Path) -> int:
    """Epoch of the last.pt on disk (-1: none yet); it must always load."""
    path = out / "last.pt"
    return load_checkpoint(path)["epoch"] if path.exists() else -1


def check_run_folder(out: Path) -> int:
    """What a kill may leave: last.pt and best.pt load, the JSON files parse. Returns last.pt's epoch."""
    epoch = checkpoint_epoch(out)
    if (out / "best.pt").exists():
        load_checkpoint(out / "best.pt")
    for name in ("split.json", "config.json", "model_card.json"):
        if (out / name).exists():
            json.loads((out / name).read_text())
    if (out / "metrics.jsonl").exists():
        lines = (out / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == list(range(len(lines)))
    return epoch


def tensors(value, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside a nested checkpoint, by its path."""
    found: dict[str, torch.Tensor] = {}
    if isinstance(value, torch.Tensor):
        found[prefix] = value
    elif isinstance(value, dict):
        for key, item in value.items():
            found |= tensors(item, f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found |= tensors(item, f"{prefix}/{index}")
    return found


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_set(tmp_path_factory.mktemp("killdata") / "faces", 24, seed=7, size=64)


def last_inode(out: Path) -> int | None:
    """Inode of last.pt (a new one after every atomic rename), None when there is none."""
    try:
        return os.stat(out / "last.pt").st_ino
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict:
    """An uninterrupted run, and a run killed (SIGKILL) five times and resumed until done."""
    base = tmp_path_factory.mktemp("kill")
    reference, killed = base / "reference", base / "killed"
    reference_proc = start(data, reference, False, base / "reference.log")  # runs alongside the other
    rng = random.Random(20240601)
    kills: list[dict] = []
    logs: list[Path] = []
    # (what to wait for, most random extra delay in seconds); the last kill hits a checkpoint write,
    # so at least one resume has work left whatever the timing
    plan = [("training", 0.4), ("checkpoint-write", 0.0), ("new-checkpoint", 0.3), ("training", 0.5),
            ("checkpoint-write", 0.0)]
    for trigger, jitter in plan:
        log = base / f"attempt{len(logs)}.log"
        logs.append(log)
        inode = last_inode(killed)
        proc = start(data, killed, resume=bool(kills), log=log)
        if trigger == "training":  # the epoch loop has begun (its first log line is out)
            reached = wait_until(proc, lambda log=log: "training {" in log.read_text(errors="replace"), poll=0.005)
        elif trigger == "checkpoint-write":
            reached = wait_until(proc, lambda: writing_last(killed))
        else:  # last.pt was replaced by this attempt
            reached = wait_until(proc, lambda inode=inode: last_inode(killed) not in (None, inode), poll=0.002)
        if reached:
            time.sleep(rng.uniform(0.0, jitter))
        proc.send_signal(signal.SIGKILL)
        proc.wait(TIMEOUT)
        epoch = check_run_folder(killed)
        kills.append({"trigger": trigger, "reached": reached, "returncode": proc.returncode, "epoch": epoch,
                      "stray": stray_temporaries(killed)})
    resumes = 0
    while checkpoint_epoch(killed) < EPOCHS - 1 and resumes < 3:
        log = base / f"resume{resumes}.log"
        logs.append(log)
        proc = start(data, killed, resume=True, log=log)
        assert proc.wait(TIMEOUT) == 0, log.read_text(errors="replace")[-3000:]
        resumes += 1
    assert reference_proc.wait(TIMEOUT) == 0, (base / "reference.log").read_text(errors="replace")[-3000:]
    return {"reference": reference, "killed": killed, "kills": kills, "resumes": resumes, "logs": logs}


def test_kills_happened_where_planned(runs) -> None:
    kills = runs["kills"]
    assert all(k["returncode"] == -signal.SIGKILL for k in kills), kills
    assert all(k["reached"] for k in kills), kills
    # a kill while last.pt was being written leaves its temporary file behind, and last.pt intact
    during_write = [k for k in kills if k["trigger"] == "checkpoint-write"]
    assert any(k["stray"] for k in during_write), kills
    assert max(k["epoch"] for k in kills) < EPOCHS - 1  # the run was never finished by a killed process
    assert 1 <= runs["resumes"] <= 2


def test_killed_run_ends_with_the_uninterrupted_weights(runs) -> None:
    a = load_checkpoint(runs["reference"] / "last.pt")
    b = load_checkpoint(runs["killed"] / "last.pt")
    assert a["epoch"] == b["epoch"] == EPOCHS - 1
    ta, tb = tensors({k: a[k] for k in ("state_dict", "optimizer")}), tensors({k: b[k] for k in ("state_dict",
                                                                                               "optimizer")})
    assert set(ta) == set(tb) and any(k.startswith("/state_dict/") for k in ta)
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert different == [], different
    assert a["scheduler"] == b["scheduler"]
    assert [h["epoch"] for h in b["history"]] == list(range(EPOCHS))  # each epoch once: repeated, not doubled
    for ha, hb in zip(a["history"], b["history"]):
        assert ha["train"]["total"] == hb["train"]["total"] and ha["val_nme"] == hb["val_nme"]


def test_truncated_or_corrupt_checkpoints_are_one_line(runs, data, tmp_path, capsys) -> None:
    good = (runs["reference"] / "last.pt").read_bytes()
    stray = sorted(stray_temporaries(runs["killed"]))
    cases = {
        "empty.pt": b"",
        "tenth.pt": good[: len(good) // 10],
        "half.pt": good[: len(good) // 2],
        "almost.pt": good[:-64],
        "noise.pt": bytes(range(256)) * 64,
    }
    if stray:
        cases["killed-mid-write.pt"] = (runs["killed"] / stray[0]).read_bytes()
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, buffer)
    cases["other.pt"] = buffer.getvalue()
    for name, content in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        rc = main(["evaluate", "--data", str(data), "--model", str(bad)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, (name, err)
        assert err[0].startswith(f"asmnet: error: {bad}: "), err
        problem = err[0].lower()
        assert "corrupt or truncated" in problem or "not an asmnet checkpoint" in problem, err


@pytest.mark.parametrize("damage", ["short-text", "flipped-bytes"])
def test_every_corrupt_checkpoint_is_refused(runs, data, tmp_path, capsys, damage: str) -> None:
    good = bytearray((runs["reference"] / "last.pt").read_bytes())
    if damage == "short-text":
        content = b"hello\n"
    else:
        for i in range(len(good) // 2, len(good) // 2 + 64):
            good[i] ^= 0xFF
        content = bytes(good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    rc = main(["evaluate", "--data", str(data / "face_000.pts"), "--model", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"asmnet: error: {bad}: "), err
