"""model.json has one owner, asmnet.package: what it writes loads, a document that would not load
is never written, and each step of the build chain (scripts/README.md) edits model.json through it
and changes only its own fields."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from asmnet.errors import ModelError
from asmnet.package import (
    drop_learned_thresholds,
    edit_model_json,
    read_model_document,
    set_quality_model,
    set_quality_thresholds,
    write_model_json,
)
from asmnet.runtime import DEFAULT_MODEL_DIR, MODELS_DIR, load_model, shipped_models

ROOT = Path(__file__).resolve().parents[1]


def load_program(path: Path):
    """A script or benchmark of the repository as a module (they are not part of the package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of the default shipped package."""
    return Path(shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "default"))


@pytest.mark.parametrize("name", shipped_models())
def test_a_shipped_model_json_written_back_is_the_same_bytes(tmp_path, name):
    source = MODELS_DIR / name / "model.json"
    info = write_model_json(tmp_path / "model.json", read_model_document(source))
    assert (tmp_path / "model.json").read_bytes() == source.read_bytes()
    assert info.name == name


def test_a_document_that_would_not_load_is_not_written(package):
    before = (package / "model.json").read_bytes()
    document = read_model_document(package / "model.json")
    document["crop_scale"] = float("inf")
    with pytest.raises(ModelError, match="crop_scale"):
        write_model_json(package / "model.json", document)
    with pytest.raises(ModelError, match="crop_scale"), edit_model_json(package / "model.json") as meta:
        meta["crop_scale"] = -1
    with pytest.raises(KeyError), edit_model_json(package / "model.json") as meta:
        meta["card"] = {}
        raise KeyError("a step that fails half way")
    assert (package / "model.json").read_bytes() == before


def test_not_a_model_json_is_refused(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ModelError, match="not an asmnet model.json"):
        read_model_document(tmp_path / "model.json")


def test_quality_edits(package):
    with edit_model_json(package / "model.json") as meta:
        quality_model = meta.pop("quality_model")
        del meta["outputs"]["error"]
        set_quality_model(meta, quality_model)
    original = read_model_document(DEFAULT_MODEL_DIR / "model.json")
    assert read_model_document(package / "model.json") == original
    meta = read_model_document(package / "model.json")
    stale = drop_learned_thresholds(meta)
    assert stale and all(k.startswith("learned") for k in stale) and meta["quality_threshold"] is None
    assert not set(stale) & set(meta["quality_thresholds"])
    set_quality_thresholds(meta, {"shape": 1.5, "learned2": 5.0}, "learned2")
    assert meta["quality_thresholds"] == {"shape": 1.5, "learned2": 5.0} and meta["quality_threshold"] == 5.0
    write_model_json(package / "model.json", meta)
    assert load_model(package).info.quality_thresholds == {"shape": 1.5, "learned2": 5.0}


def test_second_look_writes_only_the_quality_fields(package):
    second_look = load_program(ROOT / "benchmarks" / "second_look.py")
    kind = "learned2"
    setting = second_look.KIND_SETTING[kind]
    rng = np.random.default_rng(0)
    cache = {f"gt/0/{setting}/score/{kind}": rng.uniform(0, 10, 50), f"gt/0/{setting}/nme": rng.uniform(1, 12, 50)}
    report = {"kinds": {k: {"threshold": t, "per_protocol": {"gt": {}, "dlib-hog": {}},
                            "validation": {"n": 50, "roc_auc": 0.9, "flagged": 0.05, "failures_caught": 2,
                                           "failures": 3}}
                        for k, t in (("shape", 1.234567), (kind, 5.678912))}}
    before = read_model_document(package / "model.json")
    second_look.write_thresholds(package, report, kind, cache)
    after = read_model_document(package / "model.json")
    assert after["quality_thresholds"] == {"shape": 1.23457, kind: 5.67891} and after["quality_threshold"] == 5.67891
    assert after["card"]["quality"]["with_detector"]["boxes"] == "ground truth + dlib-hog"
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"quality_thresholds", "quality_threshold", "card"}
    assert {k for k in before["card"] if before["card"][k] != after["card"][k]} == {"quality"}


def test_fit_quality_writes_the_head_and_its_fields(package):
    import onnx

    from asmnet.packaging.error_head import error_head_weights
    from asmnet.quality import QualityModel

    fit_quality = load_program(ROOT / "scripts" / "fit_quality.py")
    weight, bias = error_head_weights(onnx.load(str(package / "model.onnx")))
    info = load_model(package).info
    before = read_model_document(package / "model.json")
    report = {"kinds": {k: {"train_clean_out_of_fold": {}} for k in ("learned0", "learned1", "learned2")}}
    probe = np.random.default_rng(0).integers(0, 256, (2, info.input_size, info.input_size, 3), dtype=np.uint8)
    quality_model = QualityModel.from_json(info.quality_model.to_json(), "model.json")
    written = fit_quality.write_package(package, weight, bias, quality_model, probe, report)
    assert written["landmarks_pose_bit_identical"]
    after = read_model_document(package / "model.json")
    assert after["quality_model"] == before["quality_model"] and after["outputs"] == before["outputs"]
    assert after["quality_threshold"] is None  # measured again by second_look.py --write-thresholds
    assert not any(k.startswith("learned") for k in after["quality_thresholds"])
    assert {k for k in before if before[k] != after[k]} == {"quality_threshold", "quality_thresholds", "card"}


def test_card_only_renders_the_shipped_card(package):
    build_model = load_program(ROOT / "scripts" / "build_model.py")
    (package / "MODEL_CARD.md").unlink()
    build_model.rerender_card(package, measure_speed=False)
    assert (package / "MODEL_CARD.md").read_text() == (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert (package / "model.json").read_bytes() == (DEFAULT_MODEL_DIR / "model.json").read_bytes()


def test_the_build_chain_script_runs_the_steps_in_order():
    script = (ROOT / "scripts" / "build_shipped_model.sh").read_text()
    steps = ["scripts/build_model.py --checkpoint", "scripts/fit_quality.py", "benchmarks/second_look.py",
             "scripts/build_model.py --card-only"]
    positions = [script.index(step) for step in steps]
    assert positions == sorted(positions)
    assert "--write-thresholds" in script and "--write" in script


def test_the_card_names_every_data_folder_with_its_count_and_what_the_run_read():
    from types import SimpleNamespace

    from asmnet.packaging.card import group_text
    from asmnet.training.split import ALL_DATA_PATTERN, UDACITY_CLIP_PATTERN

    build_model = load_program(ROOT / "scripts" / "build_model.py")
    keys = ["lfpw_train/a", "lfpw_train/b", "helen_train/1_1", "afw/2_1", "udacity_train/x_10", "mine/z"]
    lines = build_model.data_description([SimpleNamespace(key=k) for k in keys], [".data/pack/lfpw_train"])
    assert lines == ["afw (300W AFW, 1 faces)", "helen_train (300W HELEN train, 1 faces)",
                     "lfpw_train (300W LFPW train, 2 faces)", "mine (annotated faces, 1 faces)",
                     "udacity_train (1 video frames)", "read from .data/pack/lfpw_train"]
    assert "HELEN or AFW photo" in group_text(ALL_DATA_PATTERN)
    assert "photo" not in group_text(UDACITY_CLIP_PATTERN)
