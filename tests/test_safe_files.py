"""Issue 25.23: small text and JSON files are read through one helper (asmnet.fileio): only
regular files, at most SMALL_FILE_MAX_BYTES, JSON nested at most MAX_JSON_DEPTH levels; every
problem is one line naming the file, never a RecursionError, a hang or a memory blow-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from asmnet.errors import AsmnetError, DataError, ModelError
from asmnet.evaluation import read_keys
from asmnet.fileio import MAX_JSON_DEPTH, SMALL_FILE_MAX_BYTES, json_depth, parse_json, read_small_bytes, read_small_json
from asmnet.formats import read_pose_csv, read_pts
from asmnet.runtime import load_model, read_model_json

DEEP = "[" * 100_000 + "]" * 100_000


def one_line_error(call, kind: type[AsmnetError], path: Path, *words: str) -> str:
    """``call()`` must raise ``kind`` with a one-line message naming ``path`` and ``words``;
    it runs in a thread so that a call that blocks (a FIFO opened for reading) fails the test."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert outcome, f"reading {path} did not return within 20 s"
    exc = outcome[0]
    assert isinstance(exc, kind), repr(exc)
    message = str(exc)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def test_a_fifo_is_refused_without_waiting_for_a_writer(fifo: Path, tmp_path: Path) -> None:
    for call, kind in [(lambda: read_model_json(fifo), ModelError), (lambda: read_pts(fifo), DataError),
                       (lambda: read_pose_csv(fifo), DataError), (lambda: read_keys(fifo), DataError)]:
        one_line_error(call, kind, fifo, "not a regular file")
    package = tmp_path / "package"
    package.mkdir()
    os.mkfifo(package / "model.json")
    one_line_error(lambda: load_model(package), ModelError, package / "model.json", "not a regular file")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_is_refused_before_reading() -> None:
    zero = Path("/dev/zero")
    one_line_error(lambda: read_pts(zero), DataError, zero, "not a regular file")
    one_line_error(lambda: read_model_json(zero), ModelError, zero, "not a regular file")


def test_files_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.pts"
    with open(big, "wb") as fh:  # sparse: no disk space taken
        fh.truncate(SMALL_FILE_MAX_BYTES + 1)
    one_line_error(lambda: read_pts(big), DataError, big, f"larger than the limit of {SMALL_FILE_MAX_BYTES} bytes")
    small = tmp_path / "small.txt"
    small.write_bytes(b"x" * 101)
    assert read_small_bytes(small, max_bytes=101) == b"x" * 101
    one_line_error(lambda: read_small_bytes(small, max_bytes=100), DataError, small, "limit of 100 bytes")


def test_deeply_nested_json_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    model_json = tmp_path / "model.json"
    model_json.write_text(DEEP)
    one_line_error(lambda: read_model_json(model_json), ModelError, model_json, "nested 100000 levels deep")
    keys = tmp_path / "split.json"
    keys.write_text(json.dumps({"val_keys": [[[["a"]]]] * 2}).replace("[[[[", "[" * 70).replace("]]]]", "]" * 70))
    one_line_error(lambda: read_keys(keys), DataError, keys, f"at most {MAX_JSON_DEPTH}")
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        parse_json(DEEP)  # a JSON Lines record (--resume)


def test_json_helpers_agree_with_json_on_ordinary_input(tmp_path: Path) -> None:
    value = {"a": [1, {"b": "[[{{ in a string \" ]"}], "c": None}
    text = json.dumps(value)
    assert json_depth(text) == 3 and json_depth("7") == 0
    assert parse_json(text) == value
    path = tmp_path / "v.json"
    path.write_text("\ufeff" + text, encoding="utf-8")  # a BOM is tolerated
    assert read_small_json(path) == value
    path.write_text("{", encoding="utf-8")
    one_line_error(lambda: read_small_json(path, "key list"), DataError, path, "cannot read key list: not JSON")
    for shipped in Path(__file__).resolve().parents[1].glob("src/asmnet/models/*/model.json"):
        assert read_small_json(shipped) == json.loads(shipped.read_text(encoding="utf-8"))


def test_cli_names_a_fifo_model_json_in_one_line(fifo: Path, tmp_path: Path) -> None:
    package = tmp_path / "package"
    package.mkdir()
    os.rename(fifo, package / "model.json")
    image = Path(__file__).resolve().parents[1] / "docs" / "astronaut_annotated.jpg"
    result = subprocess.run([sys.executable, "-m", "asmnet", "predict", str(image), "--model", str(package)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.json" in lines[0] and "not a regular file" in lines[0], result.stderr


def test_a_deeply_nested_resume_line_is_not_a_record() -> None:
    from asmnet.records import RecordError, read_record

    with pytest.raises(RecordError, match="not JSON"):
        read_record(DEEP)
