"""Outputs never touch the user's files, land where the inputs say, and fail early and in one line
(issues 14.2, 14.4, 14.5 and 13.3): `asmnet predict` on tiny pictures (no face: fast)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from asmnet.cli import main


def picture(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix if path.suffix != ".pgm" else ".pgm",
                           np.full((24, 24) if path.suffix == ".pgm" else (24, 24, 3), value, np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def run(argv: list, capsys) -> tuple[int, list[str]]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip().splitlines()


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_out_equal_to_the_input_folder_is_refused_and_the_photos_stay(tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    photos = [picture(folder / f"p{i}.jpg", 40 * i) for i in range(3)]
    before = [p.read_bytes() for p in photos]
    rc, err = run(["predict", folder, "--out", folder], capsys)
    assert rc == 2 and len(err) == 1 and "would overwrite the input" in err[0], err
    assert [p.read_bytes() for p in photos] == before
    assert sorted(os.listdir(folder)) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    rc, err = run(["predict", folder, "--json", photos[1]], capsys)  # --json naming an input
    assert rc == 2 and "--json names an input file" in err[-1] and photos[1].read_bytes() == before[1]


def test_out_inside_the_input_folder_is_not_read_as_input(tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    for i in range(2):
        picture(folder / f"p{i}.png")
    for _ in range(2):  # the second run must not annotate the first run's annotated copies
        rc, err = run(["predict", folder, "--out", folder / "annotated", "--json", tmp_path / "r.jsonl"], capsys)
        assert rc == 0, err
        assert len(records(tmp_path / "r.jsonl")) == 2
    assert sorted(os.listdir(folder / "annotated")) == ["p0.png", "p1.png"]


def test_outputs_keep_relative_path_and_extension_and_never_collide(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a/x.jpg", "a/x.png", "a/y.pgm", "a/deep/z.bmp", "r1/x.jpg", "r2/x.jpg"):
        picture(Path(name))
    rc, err = run(["predict", "a", "r1", "r2/x.jpg", "--out", "o", "--json", "o.jsonl"], capsys)
    assert rc == 0, err
    made = sorted(str(p.relative_to("o")) for p in Path("o").rglob("*") if p.is_file())
    assert made == ["a/deep/z.bmp", "a/x.jpg", "a/x.png", "a/y.pgm.png", "r1/x.jpg", "r2/x.jpg"]
    assert cv2.imread("o/a/x.png") is not None and cv2.imread("o/a/y.pgm.png").shape == (24, 24, 3)
    rc, err = run(["predict", "r1", "--out", "one"], capsys)  # one folder: its own layout
    assert rc == 0 and sorted(os.listdir("one")) == ["x.jpg"]


def test_each_file_is_processed_once_however_it_is_named(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("coll/a.jpg", "coll/b.jpg", "coll/in/c.jpg", "coll/in/d.jpg"):
        picture(Path(name))
    os.symlink(Path("coll/a.jpg").resolve(), "link.jpg")
    rc, err = run(["predict", "coll", "coll/in", "./coll/in", "coll/a.jpg", "link.jpg", "--json", "r.jsonl"], capsys)
    assert rc == 0 and "4 done" in err[-1], err
    assert sorted(r["file"] for r in records(Path("r.jsonl"))) == [str(tmp_path / n) for n in (
        "coll/a.jpg", "coll/b.jpg", "coll/in/c.jpg", "coll/in/d.jpg")]  # absolute, each under its first spelling
    # resumed with the folder spelled another way (absolute, trailing slash): nothing again
    rc, err = run(["predict", f"{tmp_path}/coll/", "--json", "r.jsonl", "--resume"], capsys)
    assert rc == 0 and "0 done, 4 already in the output" in err[-1], err
    assert len(records(Path("r.jsonl"))) == 4


def test_broken_links_and_odd_names_are_one_line_each(tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    picture(folder / "good.jpg")
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    (folder / "two\nlines.jpg").write_text("not a picture")
    rc, err = run(["predict", folder], capsys)
    assert rc == 1
    failed = [line for line in err if line.startswith("asmnet: failed: ")]
    assert len(failed) == 2, err
    assert any("dangling.jpg: broken symbolic link" in line for line in failed)
    assert any("two\\nlines.jpg: " in line for line in failed)


def test_unwritable_outputs_fail_before_the_work_in_one_line(tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    picture(folder / "p.jpg")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for flag in ("--out", "--json"):
        rc, err = run(["predict", folder, flag, blocker / "sub"], capsys)
        assert rc == 2 and len(err) == 1 and err[0].startswith(f"asmnet: error: {blocker / 'sub'}"), err
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        if os.access(readonly, os.W_OK):
            pytest.skip("running as root: a read-only folder is writable")
        rc, err = run(["predict", folder, "--out", readonly], capsys)
        assert rc == 2 and len(err) == 1 and "cannot write here (Permission denied)" in err[0], err
    finally:
        readonly.chmod(0o755)


def test_full_disk_stops_predict_in_one_line_and_resume_repairs_the_json(tmp_path, capsys, monkeypatch) -> None:
    import asmnet.jobs.record_sink

    folder = tmp_path / "in"
    for i in range(4):
        picture(folder / f"p{i}.jpg", 30 * i)
    out_json = tmp_path / "r.jsonl"

    class FillsUp:
        """A file that takes 1.5 records, then fails as a full disk does (half a line written)."""

        def __init__(self, real):
            self.real, self.name, self.budget = real, real.name, None

        def write(self, text: str) -> int:
            self.budget = int(1.5 * len(text)) if self.budget is None else self.budget
            part = text[: max(0, self.budget)]
            self.real.write(part)
            self.real.flush()
            self.budget -= len(part)
            if len(part) < len(text):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return len(text)

        def flush(self) -> None:
            self.real.flush()

        def close(self) -> None:
            self.real.close()

    real_open = open
    monkeypatch.setattr(asmnet.jobs.record_sink, "open", lambda *a, **k: FillsUp(real_open(*a, **k)), raising=False)
    rc, err = run(["predict", folder, "--json", out_json], capsys)
    assert rc == 2 and err[-1].startswith(f"asmnet: error: {out_json}: cannot write") and "No space" in err[-1], err
    lines = out_json.read_text().split("\n")
    assert len(lines) == 2 and json.loads(lines[0]) and lines[1]  # one record, then half a line
    monkeypatch.undo()
    rc, err = run(["predict", folder, "--json", out_json, "--resume"], capsys)
    assert rc == 0 and "3 done, 1 already in the output" in err[-1], err
    assert sorted(r["file"] for r in records(out_json)) == [str(folder / f"p{i}.jpg") for i in range(4)]


def test_full_disk_while_writing_annotated_images_stops_the_run(tmp_path, capsys, monkeypatch) -> None:
    import asmnet.fileio

    folder = tmp_path / "in"
    for i in range(3):
        picture(folder / f"p{i}.jpg")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(asmnet.fileio.os, "fsync", no_space)
    rc, err = run(["predict", folder, "--out", tmp_path / "o"], capsys)
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert not [p for p in (tmp_path / "o").rglob("*") if p.is_file()]  # no half-written picture left


@pytest.mark.parametrize("command", ["evaluate --json", "evaluate --ced", "benchmark --json", "demo --out",
                                     "train --out", "models --json"])
def test_other_commands_refuse_an_unwritable_output_before_the_work(command, synthetic_set, tmp_path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    target = blocker / "sub"
    name, flag = command.split()
    data = ["--data", synthetic_set] if name in ("evaluate", "train") else []
    extra = ["--out", tmp_path / "run"] if name == "train" and flag != "--out" else []
    rc, err = run([name, *data, *extra, flag, target], capsys)
    err = [line for line in err if line.startswith("asmnet: ")]
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"asmnet: error: {target}"), err


def test_full_disk_is_one_line_and_keeps_the_previous_file(synthetic_set, tmp_path, capsys, monkeypatch) -> None:
    import asmnet.fileio

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    old = tmp_path / "eval.json"
    old.write_text('{"old": true}\n')
    monkeypatch.setattr(asmnet.fileio.os, "fsync", no_space)
    rc, err = run(["evaluate", "--data", synthetic_set, "--json", old], capsys)
    assert rc == 2 and err[-1] == f"asmnet: error: {old}: cannot write (No space left on device)", err
    assert old.read_text() == '{"old": true}\n' and sorted(os.listdir(tmp_path)) == ["eval.json"]
    rc, err = run(["train", "--data", synthetic_set, "--out", tmp_path / "run", "--workers", "0", "--device", "cpu"],
                  capsys)
    err = [line for line in err if line.startswith("asmnet: ")]
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err
