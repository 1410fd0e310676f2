"""What `asmnet predict` shows and writes (issue 25): the faces in words, `--json -`, no empty
output file, the `--resume` rules, `--out` among the inputs, quiet workers on Ctrl-C and kill -9,
stale temporaries, and the README's record schema against a real record."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from asmnet.cli import main
from asmnet.jobs.inputs import remove_stale_temporaries
from asmnet.jobs.predict import PredictOptions, predict
from asmnet.records import read_record
from asmnet.runtime import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")
README = Path(__file__).resolve().parents[1] / "README.md"
CLOSING = re.compile(r"asmnet: (\d+) done, (\d+) already in the output, (\d+) failed; (no|\d+) faces? found, "
                     r"(\d+) flagged")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    skdata = pytest.importorskip("skimage.data", reason="the test photo comes from scikit-image")
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    cv2.imwrite(str(path), skdata.astronaut()[:, :, ::-1])
    return path


@pytest.fixture(scope="module")
def astronaut_record(photo, tmp_path_factory) -> dict:
    """The record `asmnet predict` writes for the astronaut (the default model and detector)."""
    out = tmp_path_factory.mktemp("record") / "r.jsonl"
    report = predict([str(photo)], PredictOptions(json_path=str(out)))
    assert report.done == 1 and report.faces == 1
    (line,) = out.read_text().splitlines()
    return read_record(line)


def pictures(folder: Path, n: int, size: tuple[int, int] = (24, 24)) -> list[Path]:
    """n plain pictures without a face (fast to search)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"p{i:03d}.jpg")
        cv2.imwrite(str(paths[-1]), np.full((size[1], size[0], 3), 40 + i % 150, np.uint8))
    return paths


def run(argv: list, capsys) -> tuple[int, str, list[str]]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip().splitlines()


def test_predict_without_outputs_prints_each_face_and_counts_them(photo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(["predict", photo, tmp_path / "missing.jpg"], capsys)
    assert rc == 1
    head, face = out.splitlines()
    assert head == f"{photo}: 1 face"
    assert re.fullmatch(r"  face 0: box \[\d+, \d+, \d+, \d+\], yaw [+-]\d+\.\d, pitch [+-]\d+\.\d, roll [+-]\d+\.\d "
                        r"deg, quality \d+\.\d\d", face), face
    closing = [m.groups() for m in map(CLOSING.fullmatch, err) if m]
    assert closing == [("1", "0", "1", "1", "0")], err  # the failed inputs are listed after it
    assert os.listdir(tmp_path) == []  # nothing asked to be written, nothing written


def test_json_dash_writes_json_lines_to_stdout_and_the_words_to_stderr(photo, astronaut_record, tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(["predict", photo, "--json", "-"], capsys)
    assert rc == 0, err
    records = [read_record(line) for line in out.splitlines()]
    assert records == [astronaut_record] and records[0]["file"] == str(photo)
    assert f"{photo}: 1 face" in err and CLOSING.fullmatch(err[-1]), err
    assert os.listdir(tmp_path) == []  # no file named "-"


def test_json_dash_into_a_reader_that_leaves_is_one_line(photo, tmp_path):
    """`asmnet predict ... --json - | true`: standard output closes before the first record."""
    script = f"{sys.executable} -m asmnet predict {photo} --json - | true; exit ${{PIPESTATUS[0]}}"
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr and "Exception ignored" not in res.stderr, res.stderr
    assert lines[-1] == "asmnet: error: standard output: cannot write the JSON Lines output (Broken pipe)", lines


def test_demo_writes_the_record_predict_writes(astronaut_record, tmp_path, capsys):
    rc, out, _ = run(["demo", "--out", tmp_path], capsys)
    assert rc == 0 and sorted(os.listdir(tmp_path)) == ["astronaut.json", "astronaut.png", "astronaut_annotated.jpg"]
    demo = json.loads((tmp_path / "astronaut.json").read_text())
    assert out.splitlines()[0] == f"{tmp_path / 'astronaut.png'}: 1 face"
    rc, out, _ = run(["predict", tmp_path / "astronaut.png", "--json", "-"], capsys)
    assert rc == 0 and demo == read_record(out.splitlines()[0])  # the same record of the same photo
    assert {k: v for k, v in demo.items() if k != "file"} == {k: v for k, v in astronaut_record.items() if k != "file"}


def shape(value):
    """A JSON value's keys and nesting: dicts by their keys, lists by their first item, scalars as one."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return "scalar"


def test_readme_schema_block_is_a_real_record(astronaut_record):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Output schema"):]
    start = section.index("```json\n") + len("```json\n")
    block = section[start:section.index("\n```", start)]
    documented = json.loads(block)
    read_record(block.replace("\n", " "))  # a record as --resume reads it
    assert shape(documented) == shape(astronaut_record)
    assert list(documented) == list(astronaut_record) and list(documented["faces"][0]) == list(astronaut_record[
        "faces"][0])  # the same order too


def test_a_run_that_writes_nothing_leaves_no_output_file(tmp_path, capsys):
    bad = tmp_path / "x.jpg"
    bad.write_text("this is not a picture")
    out = tmp_path / "x.jsonl"
    for inputs in ([bad], [tmp_path / "missing.jpg"]):
        rc, _, err = run(["predict", *inputs, "--json", out], capsys)
        assert rc == 2 and any(line.startswith("asmnet: failed: ") for line in err), err
        assert not out.exists()
    out.write_text("an earlier file\n")
    rc, _, _ = run(["predict", bad, "--json", out], capsys)
    assert rc == 2 and out.read_text() == "an earlier file\n"  # left as it was


@pytest.mark.parametrize("content", ["my notes\n", "RECORD\nmy notes\n", "my notes"])
def test_resume_refuses_a_file_of_other_lines_and_leaves_it(content, tmp_path, capsys):
    folder = tmp_path / "d"
    pictures(folder, 2)
    notes = tmp_path / "notes.txt"
    if "RECORD" in content:
        rc, _, err = run(["predict", folder / "p000.jpg", "--json", notes], capsys)
        assert rc == 0, err
        content = content.replace("RECORD\n", notes.read_text())
    notes.write_text(content)
    rc, _, err = run(["predict", folder, "--json", notes, "--resume"], capsys)
    line = content.splitlines().index("my notes") + 1
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"asmnet: error: {notes}:{line}: not an asmnet record"), err
    assert notes.read_text() == content


def test_resume_refuses_another_model_or_pixel_origin(tmp_path, capsys):
    folder = tmp_path / "d"
    pictures(folder, 2)
    out = tmp_path / "r.jsonl"
    assert run(["predict", folder / "p000.jpg", "--json", out], capsys)[0] == 0
    before = out.read_text()
    for flags, theirs in ((["--pixel-origin", "1"], "model 'default' with pixel origin 1"),
                          (["--model", "default-fp32"], "model 'default-fp32' with pixel origin 0")):
        rc, _, err = run(["predict", folder, "--json", out, "--resume", *flags], capsys)
        assert rc == 2 and len(err) == 1, err
        assert err[0].startswith(f"asmnet: error: {out}: holds records of model 'default' with pixel origin 0, "
                                 f"this run is {theirs}"), err
        assert out.read_text() == before
    rc, _, err = run(["predict", folder, "--json", out, "--resume"], capsys)
    assert rc == 0 and "1 done, 1 already in the output" in err[-1], err
    assert len(out.read_text().splitlines()) == 2


def test_resume_from_another_working_folder_repeats_nothing(tmp_path, capsys, monkeypatch):
    work = tmp_path / "a"
    pictures(work / "photos", 3)
    monkeypatch.chdir(work)
    rc, _, err = run(["predict", "photos", "--json", "../r.jsonl"], capsys)
    assert rc == 0, err
    files = [json.loads(line)["file"] for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted(files) == [str(work / "photos" / f"p{i:03d}.jpg") for i in range(3)]  # absolute
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    pictures(work / "photos" / "more", 1)
    rc, _, err = run(["predict", "../a/photos", "--json", "../r.jsonl", "--resume"], capsys)
    assert rc == 0 and "1 done, 3 already in the output" in err[-1], err
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 4


def test_out_that_is_one_of_several_input_folders_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pictures(Path("a"), 1)
    pictures(Path("b"), 1)
    rc, _, err = run(["predict", "a", "b", "--out", "b"], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("asmnet: error: b: is an input folder"), err
    assert sorted(os.listdir("b")) == ["p000.jpg"]


@pytest.mark.parametrize("flags, words", [
    (["--json", ""], "--json: an empty file name"),
    (["--out", ""], "--out: an empty folder name"),
    (["--resume"], "--resume skips the inputs already in the --json file"),
    (["--resume", "--json", "-"], "cannot resume standard output"),
])
def test_output_flags_that_mean_nothing_are_one_line(flags, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pictures(Path("d"), 1)
    rc, out, err = run(["predict", "d", *flags], capsys)
    assert rc == 2 and out == "" and len(err) == 1 and err[0].startswith("asmnet: error: ") and words in err[0], err
    assert os.listdir(tmp_path) == ["d"]


def test_stale_temporaries_beside_the_outputs_are_removed(tmp_path, capsys):
    folder = tmp_path / "in"
    pictures(folder, 1)
    pictures(folder / "sub", 1)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = [out / ".p000.jpg.k2j4h5g6.tmp", out / "sub" / ".p000.jpg.a_b1c2d3.tmp"]
    kept = [out / ".notes.tmp", out / ".other.jpg.abcd1234.tmp", out / ".p000.jpg.tmp", out / "p001.jpg"]
    for path in stale + kept:
        path.write_text("x")
    rc, _, err = run(["predict", folder, "--out", out], capsys)
    assert rc == 0, err
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    (out / ".clip.mp4.part.mp4").write_text("x")  # an annotated video being written when the run was killed
    assert remove_stale_temporaries([out / "clip.mp4", out / "never" / "made.jpg"]) == 1
    assert not (out / ".clip.mp4.part.mp4").exists()


# -- worker processes ---------------------------------------------------------------------------
def workers_of(pid: int) -> list[int]:
    """The multiprocessing workers (spawned interpreters) whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def as_from_a_terminal() -> None:
    """In the child before exec: Ctrl-C handled as a shell's child gets it. A process inherits an
    ignored or blocked SIGINT, and inside the whole test suite something had left it so (the run
    then ignored the test's Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def start_predict(folder: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "asmnet", "predict", str(folder), "--workers", "2", "--json",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=as_from_a_terminal)


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"never saw {what}: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_with_workers_is_one_line(tmp_path):
    folder, out = tmp_path / "d", tmp_path / "r.jsonl"
    pictures(folder, 400, size=(640, 480))  # each takes the detector a while: the run is still going
    proc = start_predict(folder, out)
    wait_for(lambda: len(workers_of(proc.pid)) == 2, proc, "two workers")
    workers = workers_of(proc.pid)
    # the first records: the workers' start (the only moment the parent ignores Ctrl-C) is over, and
    # most pictures are still to do (a fixed pause was a race: on an idle machine the run could end first)
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 1, proc, "records from the workers")
    masks = [line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if line.startswith("Sig")]
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "asmnet: interrupted", (err, masks)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert not any(alive(w) for w in workers)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the workers die with their parent on Linux")
def test_kill_9_of_the_parent_ends_the_workers_quietly(tmp_path):
    folder = tmp_path / "d"
    pictures(folder, 400, size=(640, 480))  # each takes the detector a while: the run is still going
    out = tmp_path / "r.jsonl"
    proc = start_predict(folder, out)
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 16, proc, "records from the workers")
    workers = workers_of(proc.pid)
    assert len(workers) == 2
    proc.kill()
    _, err = proc.communicate(timeout=120)  # ends when every holder of the pipe (workers too) is gone
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    deadline = time.monotonic() + 30
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers)

