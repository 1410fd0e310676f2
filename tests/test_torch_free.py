"""The inference path installs and runs without PyTorch: a fresh virtual environment, the package
installed from this checkout (its plain dependencies only), and every ``asmnet`` command: it works
(predict, models, info on the shipped model's ONNX graph, evaluate, demo, benchmark) or says in
one line which extra to install (train, export, info on a configuration, evaluate --ced)."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import make_synthetic_set

from asmnet.runtime import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.slow  # a training run / subprocesses: left out of pytest -m "not slow"

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def torch_free(tmp_path_factory):
    """(asmnet executable, folder with astronaut.png and a tiny annotated set) in a fresh venv."""
    skdata = pytest.importorskip("skimage.data", reason="the test photo comes from scikit-image")
    import cv2

    tmp = tmp_path_factory.mktemp("torch_free")
    photo = tmp / "astronaut.png"
    cv2.imwrite(str(photo), skdata.astronaut()[:, :, ::-1])
    make_synthetic_set(tmp / "faces", 4)
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True,
                             timeout=600)
    if install.returncode != 0:
        last = (install.stderr.strip().splitlines() or ["?"])[-1]
        if "connection" in install.stderr.lower() or "no matching distribution" in install.stderr.lower():
            pytest.skip(f"cannot install the dependencies here (no package index?): {last}")
        pytest.fail(f"pip install failed: {last}")
    for module in ("torch", "matplotlib"):
        absent = subprocess.run([str(py), "-c", f"import {module}"], capture_output=True, text=True)
        assert absent.returncode != 0, f"{module} must not be installed by the plain package"
    assert sys.executable != str(py)
    return env_dir / "bin" / "asmnet", tmp


def asmnet(exe: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")
def test_every_command_works_without_torch(torch_free):
    exe, tmp = torch_free
    res = asmnet(exe, "predict", "astronaut.png", "--json", "out.jsonl", cwd=tmp)
    assert res.returncode == 0, res.stderr
    record = json.loads((tmp / "out.jsonl").read_text().splitlines()[0])
    assert record["faces"] and len(record["faces"][0]["landmarks"]) == 68
    for args in (["--help"], ["models"], ["demo", "--image", "astronaut.png", "--out", "demo"],
                 ["evaluate", "--data", "faces"], ["benchmark", "--image", "astronaut.png", "--seconds", "0.05"],
                 ["predict", "astronaut.png", "--model", "paper224"],
                 ["align", "astronaut.png", "--out", "aligned", "--template", "ffhq"]):
        res = asmnet(exe, *args, cwd=tmp)
        assert res.returncode == 0 and "Traceback" not in res.stderr, (args, res.stderr[-500:])
    info = asmnet(exe, "info", cwd=tmp)  # counted on the shipped model's ONNX graph
    # the network's 83,803,912 multiply-adds and the error head's 536
    assert info.returncode == 0 and "83,804,448" in info.stdout, info.stdout + info.stderr
    info224 = asmnet(exe, "info", "--model", "paper224", cwd=tmp)
    assert info224.returncode == 0 and "256,495,816" in info224.stdout


def test_commands_that_need_an_extra_say_which_in_one_line(torch_free):
    exe, tmp = torch_free
    for args, extra in ((["train", "--data", "faces", "--out", "run"], "asmnet[train]"),
                        (["export", "--model", "best.pt", "--out", "pkg"], "asmnet[train]"),
                        (["info", "--width", "0.5"], "asmnet[train]"),
                        (["evaluate", "--data", "faces", "--ced", "ced.png"], "matplotlib")):
        res = asmnet(exe, *args, cwd=tmp)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, (args, res.stderr)
        assert lines[0].startswith("asmnet: error:") and extra in lines[0], (args, lines)
    assert not (tmp / "run").exists() and not (tmp / "ced.png").exists()
