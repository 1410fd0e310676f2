"""Export: INT8 quantisation leaves the application's logging alone; typed export results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asmnet.runtime import MODELS_DIR

FP32 = MODELS_DIR / "default-fp32"


def test_int8_quantisation_prints_no_root_logger_lines(tmp_path, synthetic_set):
    """onnxruntime's quantiser calls logging.warning, which would set up the root logger and
    print ``WARNING:root:...``; asmnet keeps the application's logging as it was."""
    pytest.importorskip("onnxruntime.quantization")
    if not (FP32 / "model.onnx").exists():
        pytest.skip("no shipped float model")
    code = f"""
import logging
from pathlib import Path
from asmnet.formats import load_many
from asmnet.packaging.quantize import quantize_package
records = load_many([{str(synthetic_set)!r}])[0]
quantize_package(Path({str(FP32)!r}), Path({str(tmp_path / 'q')!r}), records, 4)
assert not logging.getLogger().handlers, logging.getLogger().handlers
"""
    src = str(Path(__file__).resolve().parents[1] / "src")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert "WARNING" not in res.stderr, res.stderr
    assert (tmp_path / "q" / "model.onnx").stat().st_size > 0
    assert not list((tmp_path / "q").glob(".*.tmp"))



WEIGHTS = MODELS_DIR / "default" / "weights.pt"


@pytest.mark.skipif(not WEIGHTS.exists(), reason="the shipped model has no weights.pt")
def test_export_returns_what_it_wrote(tmp_path):
    pytest.importorskip("torch")
    from asmnet.packaging.export import ExportResult, export_model
    from asmnet.runtime import load_model

    result = export_model(WEIGHTS, tmp_path / "pkg", "mine")
    assert isinstance(result, ExportResult)
    assert result.onnx == tmp_path / "pkg" / "model.onnx" and result.onnx.stat().st_size == result.onnx_bytes
    assert result.json.exists() and result.weights is not None and result.weights.exists()
    assert 0 <= result.max_abs_diff <= 1e-4 and result.denormals_flushed >= 0
    assert load_model(tmp_path / "pkg").info.name == "mine"
    lone = export_model(WEIGHTS, tmp_path / "one.onnx")
    assert lone.weights is None and lone.json == tmp_path / "one.json"


def test_int8_export_checks_its_arguments_before_exporting(tmp_path, capsys):
    from asmnet.cli import main

    assert main(["export", "--model", "nowhere.pt", "--out", str(tmp_path / "m.onnx"), "--int8",
                 "--calib-data", "x"]) == 2
    assert "needs a package folder" in capsys.readouterr().err
    assert main(["export", "--model", "nowhere.pt", "--out", str(tmp_path / "pkg"), "--int8"]) == 2
    assert "nowhere.pt" in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()
