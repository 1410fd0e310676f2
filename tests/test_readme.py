"""The README's quick start and its "Train on your own data" example, run as written.

The commands are read from README.md itself, so the README cannot drift from what works. Only
the sizes change: ``../shared/data/*`` are tiny synthetic folders, ``--epochs`` is 1 and
``--workers`` 0 (a few more quick flags are appended to ``train``), and the photo is scikit-image's
astronaut. The webcam line is skipped (no camera here).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import cv2
import pytest
from conftest import make_synthetic_set

from asmnet.cli import main
from asmnet.runtime import DEFAULT_MODEL_DIR

README = Path(__file__).resolve().parents[1] / "README.md"
QUICK = {"--epochs": "1", "--workers": "0"}
TRAIN_EXTRA = ["--batch-size", "8", "--input-size", "64", "--warmup-epochs", "0"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")]


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start : end if end >= 0 else None]


def blocks(text: str, lang: str = "") -> list[str]:
    """The fenced code blocks of ``text`` in language ``lang`` ("" = none given)."""
    return [body for tag, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M) if tag == lang]


def commands(block: str) -> list[list[str]]:
    """The ``asmnet`` command lines of a shell block, continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        argv = shlex.split(line, comments=True)
        if argv and argv[0] == "asmnet":
            out.append(argv[1:])
    return out


def quick(argv: list[str]) -> list[str]:
    """The same command with tiny settings: --epochs 1, --workers 0, small training batches."""
    argv = [QUICK.get(prev, a) if prev in QUICK else a for prev, a in zip([""] + argv, argv)]
    if argv[0] == "train":
        argv += TRAIN_EXTRA
    return argv


@pytest.fixture()
def workplace(tmp_path, monkeypatch):
    """tmp/work (the current directory) beside tmp/shared/data with two tiny 300W-layout folders,
    photo.jpg and photos/ (the astronaut), photos/../clip.mp4 (a few frames of it), and
    src/asmnet/models/default/val_keys.txt (where a clone has the shipped model's validation
    keys) naming four of the tiny lfpw_train faces."""
    skdata = pytest.importorskip("skimage.data", reason="the test photo comes from scikit-image")
    pytest.importorskip("torch", reason="the README trains a model")
    for i, name in enumerate(("lfpw_train", "udacity_train")):
        make_synthetic_set(tmp_path / "shared" / "data" / name, 12, seed=i)
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    keys = work / "src" / "asmnet" / "models" / "default" / "val_keys.txt"
    keys.parent.mkdir(parents=True)
    keys.write_text("".join(f"lfpw_train/face_{i:03d}\n" for i in range(4)))
    photo = skdata.astronaut()[:, :, ::-1]
    cv2.imwrite(str(work / "photo.jpg"), photo)
    cv2.imwrite(str(work / "photos" / "astronaut.jpg"), photo)
    writer = cv2.VideoWriter(str(work / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, photo.shape[1::-1])
    for _ in range(3):
        writer.write(photo)
    writer.release()
    monkeypatch.chdir(work)
    return work


def run(argv: list[str], capsys) -> None:
    rc = main(quick(argv))
    captured = capsys.readouterr()
    assert rc == 0, f"asmnet {shlex.join(quick(argv))} exited {rc}: {captured.err[-800:]}"
    assert "Traceback" not in captured.err


def test_quick_start_runs_as_written(workplace, capsys):
    python, shell = blocks(section("## Quick start"), "python")[0], blocks(section("## Quick start"), "")[0]
    exec(compile(python, "README quick start", "exec"), {})  # noqa: S102 - the README's own code
    for argv in commands(shell):
        if "--webcam" in argv:
            continue  # no camera here
        run(argv, capsys)
    records = [json.loads(line) for line in Path("results.jsonl").read_text().splitlines()]
    assert {Path(r["file"]).name for r in records} == {"astronaut.jpg", "clip.mp4"}
    assert all(len(r["faces"]) >= 1 and r["pixel_origin"] == 0 for r in records)
    aligned = [json.loads(line) for line in Path("aligned/aligned.jsonl").read_text().splitlines()]
    assert aligned[0]["template"] == "arcface" and Path(aligned[0]["faces"][0]["crop"]).exists()
    mine = json.loads(Path("mine.jsonl").read_text())
    assert mine["model"] == "my_model" and len(mine["faces"][0]["landmarks"]) == 68


def test_train_on_your_own_data_ends_with_a_model_that_works_on_a_photo(workplace, capsys):
    block = blocks(section("## Train on your own data"))[0]
    argvs = commands(block)
    assert [a[0] for a in argvs] == ["train", "export", "evaluate", "predict"]
    for argv in argvs:
        run(argv, capsys)
    package = json.loads(Path("runs/mine/package/model.json").read_text())
    assert package["calibration_source"]["kind"] == "shipped" and "dlib-hog" in package["calibrations"]
    assert json.loads(Path("runs/mine/val.json").read_text())["n"] > 0
    record = json.loads(Path("runs/mine/photo.jsonl").read_text())
    assert record["model"] == "package" and len(record["faces"]) >= 1
    assert Path("runs/mine/annotated/photo.jpg").stat().st_size > 0
