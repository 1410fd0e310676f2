"""Shipped models load by name everywhere (API, CLI) and ``asmnet models`` lists them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asmnet import FaceAligner, ModelError
from asmnet.cli import main
from asmnet.runtime import DEFAULT_MODEL_DIR, MODELS_DIR, load_model, resolve_model, shipped_models

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")


def test_every_shipped_model_loads_by_name():
    names = shipped_models()
    assert names[0] == "default" and {"default-fp32", "paper224"} <= set(names)
    for name in names:
        model = load_model(name)
        assert model.info.name == name and resolve_model(name) == MODELS_DIR / name
    aligner = FaceAligner(model="paper224")
    faces = aligner(np.zeros((300, 300, 3), np.uint8), boxes=[(100, 100, 200, 200)])
    assert faces[0].landmarks.shape == (68, 2)


def test_an_existing_path_wins_over_a_name_and_unknown_names_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper224").mkdir()  # a folder of that name here is what the user means
    with pytest.raises(ModelError, match="model.json"):
        load_model("paper224")
    with pytest.raises(ModelError, match="nor a shipped model .default, accurate, default-fp32, paper224"):
        load_model("nonesuch")


def test_cli_takes_model_names(tmp_path, capsys):
    image = tmp_path / "face.png"
    import cv2

    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    for name in ("default", "default-fp32", "paper224"):
        rc = main(["predict", str(image), "--model", name, "--json", str(tmp_path / f"{name}.jsonl")])
        assert rc == 0, capsys.readouterr().err
        assert json.loads((tmp_path / f"{name}.jsonl").read_text())["model"] == name
    assert main(["predict", str(image), "--model", "nonesuch"]) == 2
    assert "nor a shipped model" in capsys.readouterr().err


def test_models_command_lists_validation_numbers(tmp_path, capsys):
    assert main(["models", "--json", str(tmp_path / "models.json")]) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "models.json").read_text())
    default = next(r for r in rows if r["name"] == "default")
    card = json.loads((DEFAULT_MODEL_DIR / "validation.json").read_text())
    assert default["default"] and default["nme_mean"] == pytest.approx(card["nme_mean"])
    assert f"{card['nme_mean']:.2f}" in out and "paper224" in out and "dlib-hog" in out


def test_onnx_graph_counts_match_the_network():
    torch = pytest.importorskip("torch")
    from asmnet.nn import count_macs, count_parameters
    from asmnet.nn.checkpoint import load_checkpoint, model_from_checkpoint
    from asmnet.onnx_graph import count_onnx

    net = model_from_checkpoint(load_checkpoint(DEFAULT_MODEL_DIR / "weights.pt"), "weights.pt")
    bn = sum(p.numel() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    import onnx

    from asmnet.packaging.error_head import error_head_weights

    for name in ("default", "default-fp32", "paper224"):  # INT8 (QDQ) and float graphs
        # the error head added after export (scripts/fit_quality.py): one multiply-add per feature
        head = error_head_weights(onnx.load(str(MODELS_DIR / name / "model.onnx")))
        extra = 0 if head is None else head[0].size
        assert extra == (536 if name.startswith("default") else 0)
        for size in (128, 224):
            params, macs = count_onnx(MODELS_DIR / name / "model.onnx", size)
            assert macs == count_macs(net, size) + extra
            # BatchNorm folded: one bias per channel
            assert params == count_parameters(net) - bn // 2 + (extra + 1 if extra else 0)
    assert count_onnx(MODELS_DIR / "paper224" / "model.onnx", 224)[1] == 256_495_816  # the paper's 256.5 M


def test_info_counts_a_model_from_its_onnx_graph(capsys):
    assert main(["info", "--model", "default-fp32"]) == 0
    assert "83,804,448" in capsys.readouterr().out  # 83,803,912 + the error head's 536
    assert main(["info", "--model", "default", "--width", "0.5"]) == 2
    assert "--model counts that model as it is" in capsys.readouterr().err
    from asmnet.onnx_graph import count_onnx

    with pytest.raises(ModelError, match="not an ONNX model"):
        count_onnx(MODELS_DIR / "default" / "model.json", 128)


def test_every_shipped_model_file_is_package_data():
    """A non-editable install carries only what pyproject's package-data names: every file under
    src/asmnet/models (a refiner's stages in nested folders included) must match one of its patterns."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["asmnet"]
    package = root / "src" / "asmnet"
    shipped = {p for p in (package / "models").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    covered = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    assert shipped and not shipped - covered, sorted(str(p.relative_to(package)) for p in shipped - covered)
