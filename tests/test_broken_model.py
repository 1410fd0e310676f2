"""A model whose weights are broken (NaN) is caught in one place, the model's ``run``, and every
caller reports it in one line instead of writing NaN landmarks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from asmnet.cli import main
from asmnet.errors import ModelError
from asmnet.runtime import MODELS_DIR, load_model

FP32 = MODELS_DIR / "default-fp32"


@pytest.fixture(scope="module")
def nan_package(tmp_path_factory):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    if not (FP32 / "model.onnx").exists():
        pytest.skip("no shipped float model")
    out = tmp_path_factory.mktemp("nan") / "nan-model"
    out.mkdir()
    shutil.copy(FP32 / "model.json", out / "model.json")
    graph = onnx.load(str(FP32 / "model.onnx"))
    last = graph.graph.initializer[-1]  # a bias of the last convolution: NaN flows to every output
    last.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(last).shape, np.nan, np.float32), last.name))
    onnx.save(graph, str(out / "model.onnx"))
    return out


def test_run_refuses_nan_outputs(nan_package):
    model = load_model(nan_package, threads=1)
    crops = np.zeros((2, model.info.input_size, model.info.input_size, 3), np.uint8)
    with pytest.raises(ModelError, match="NaN or infinite"):
        model.run(crops)


def test_aligner_and_evaluate_stop_with_one_line(nan_package, synthetic_set, capsys):
    from asmnet import FaceAligner

    image = np.zeros((96, 96, 3), np.uint8)
    with pytest.raises(ModelError, match="corrupt weights"):
        FaceAligner(str(nan_package), threads=1)(image, boxes=[(20, 20, 70, 70)])
    assert main(["evaluate", "--data", str(synthetic_set), "--model", str(nan_package), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN or infinite" in err[0]

