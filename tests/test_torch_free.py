"""The inference path installs and runs without PyTorch: a fresh virtual environment, the package
installed from this checkout (its plain dependencies only), ``asmnet predict`` on a real photo."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from asmnet.runtime import DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")
def test_fresh_venv_without_torch_predicts(tmp_path):
    skdata = pytest.importorskip("skimage.data", reason="the test photo comes from scikit-image")
    import cv2

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), skdata.astronaut()[:, :, ::-1])
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True,
                             timeout=600)
    if install.returncode != 0:
        last = (install.stderr.strip().splitlines() or ["?"])[-1]
        if "connection" in install.stderr.lower() or "no matching distribution" in install.stderr.lower():
            pytest.skip(f"cannot install the dependencies here (no package index?): {last}")
        pytest.fail(f"pip install failed: {last}")
    no_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0, "torch must not be installed by the plain package"
    out = tmp_path / "out.jsonl"
    res = subprocess.run([str(env_dir / "bin" / "asmnet"), "predict", str(photo), "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    record = json.loads(out.read_text().splitlines()[0])
    assert record["faces"] and len(record["faces"][0]["landmarks"]) == 68
    assert sys.executable != str(py)
