"""The shape regression: what it learns, how it is stored, and how a refiner stage applies it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import template_face

from asmnet.errors import ModelError
from asmnet.markup import IBUG_68
from asmnet.regions import mean_face
from asmnet.shape_regression import FILE_NAME, ShapeRegression
from asmnet.training.shape_regression import fit_shape_regression


def faces_with_a_shape_dependent_error(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, truth), each (count, 68, 2) in pixels: random similarities of random shapes,
    where the prediction's chin sits too low by an amount that grows with how far the mouth is open
    (an error that depends on the shape, as the network's do) plus a little noise."""
    rng = np.random.default_rng(seed)
    base = template_face() * 100
    truth, pred = [], []
    for _ in range(count):
        shape = base + rng.normal(0, 1.5, base.shape)
        opening = rng.uniform(0, 8)
        shape[57:60, 1] += opening  # the lower lip drops
        guess = shape + rng.normal(0, 0.3, shape.shape)
        guess[6:11, 1] += 0.6 * opening  # the chin follows the lip more than it should
        angle, scale = rng.uniform(-0.3, 0.3), rng.uniform(0.5, 2.5)
        turn = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shift = rng.uniform(0, 300, 2)
        truth.append(shape @ turn.T + shift)
        pred.append(guess @ turn.T + shift)
    return np.stack(pred), np.stack(truth)


def point_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=2).mean())


@pytest.fixture(scope="module")
def fitted():
    pred, truth = faces_with_a_shape_dependent_error(1500, seed=1)
    face = mean_face(truth, IBUG_68)
    return fit_shape_regression([pred], truth, face, groups=(60.0,), steps=(40.0, 90.0), alpha=1.0)


def test_it_learns_an_error_that_depends_on_the_shape(fitted):
    pred, truth = faces_with_a_shape_dependent_error(200, seed=2)  # faces it was not fitted on
    corrected = fitted.apply(pred)
    chin = slice(6, 11)
    assert point_error(corrected[:, chin], truth[:, chin]) < 0.35 * point_error(pred[:, chin], truth[:, chin])
    assert point_error(corrected, truth) < point_error(pred, truth)
    # the pixel convention of the points does not matter: moved by an origin, moved back
    np.testing.assert_allclose(fitted.apply(pred + 1.0, origin=1.0) - 1.0, corrected, atol=1e-9)
    assert fitted.apply(pred[:0]).shape == (0, 68, 2)


def test_it_is_stored_and_read_back_exactly(fitted, tmp_path):
    path = tmp_path / FILE_NAME
    fitted.save(path)
    loaded = ShapeRegression.load(path)
    pred, _ = faces_with_a_shape_dependent_error(20, seed=3)
    np.testing.assert_allclose(loaded.apply(pred), fitted.apply(pred), atol=1e-3)  # weights stored as float32


def test_a_broken_file_is_one_line(fitted, tmp_path):
    path = tmp_path / FILE_NAME
    path.write_bytes(b"not a numpy file")
    with pytest.raises(ModelError, match="not a shape regression file"):
        ShapeRegression.load(path)
    arrays = {name: getattr(fitted, name) for name in ("mean_face", "groups", "steps", "mean", "scale", "bias")}
    with open(path, "wb") as handle:  # weights of the wrong shape
        np.savez(handle, version=np.array(1), weights=np.zeros((2, 3, 4)), **arrays)
    with pytest.raises(ModelError, match="weights has shape"):
        ShapeRegression.load(path)


def test_a_group_with_too_few_faces_is_refused():
    pred, truth = faces_with_a_shape_dependent_error(50, seed=4)
    with pytest.raises(ValueError, match="fewer than twice"):
        fit_shape_regression([pred], truth, mean_face(truth, IBUG_68), groups=(), steps=(), alpha=1.0)


def test_a_refiner_stage_applies_its_shape_regression_after_its_parts(fitted, tmp_path):
    from asmnet.regions import RegionRefiner

    source = tmp_path / "plain"
    _write_tiny_refiner(source)
    with_shape = tmp_path / "with_shape"
    shutil.copytree(source, with_shape)
    fitted.save(with_shape / FILE_NAME)
    meta = json.loads((with_shape / "refiner.json").read_text())
    (with_shape / "refiner.json").write_text(json.dumps({**meta, "shape_regression": FILE_NAME}))
    image = np.random.default_rng(5).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    pred, _ = faces_with_a_shape_dependent_error(3, seed=6)
    owner = np.zeros(3, int)
    parts = RegionRefiner(source).refine([image], owner, pred, origin=0.0)
    np.testing.assert_allclose(RegionRefiner(with_shape).refine([image], owner, pred, origin=0.0),
                               fitted.apply(parts), atol=1e-3)
    (with_shape / "refiner.json").write_text(json.dumps({**meta, "shape_regression": "../x.npz"}))
    with pytest.raises(ModelError, match="'shape_regression' must be"):
        RegionRefiner(with_shape)


def _write_tiny_refiner(folder) -> None:
    """A one-kind refiner folder (an untrained eye network: it leaves the points where they are)."""
    import torch

    from asmnet.nn.refiner import PatchNet
    from asmnet.regions import KINDS_68, write_refiner_json

    folder.mkdir()
    eye = KINDS_68[0]
    torch.onnx.export(PatchNet(len(eye.points), 4).eval(), (torch.zeros(1, 3, eye.size, eye.size),),
                      str(folder / "eye.onnx"), input_names=["patches"], output_names=["points"],
                      dynamic_axes={"patches": {0: "batch"}, "points": {0: "batch"}}, opset_version=17, dynamo=False)
    write_refiner_json(folder, [eye], mean_face(np.stack([template_face()]), IBUG_68), {})


@pytest.mark.slow
def test_kinds_none_is_a_stage_with_only_the_shape_regression(tmp_path):
    """``asmnet refiner --kinds none``: no part networks; the regression is fitted on the training
    faces and kept because it lowers the validation NME (the default model's points on drawn faces
    carry a large error that depends on the shape)."""
    from conftest import make_synthetic_set

    from asmnet.errors import AsmnetError
    from asmnet.regions import RegionRefiner
    from asmnet.training.refiner import train_refiner
    from asmnet.training.refiner_config import RefinerConfig

    data = make_synthetic_set(tmp_path / "synth", 420, seed=8, size=96)
    cfg = RefinerConfig(data=[str(data)], out=str(tmp_path / "run"), kinds=["none"], label_origin=0.0,
                        val_fraction=0.15, detector="none")
    assert cfg.kinds == []
    summary = train_refiner(cfg, log=lambda line: None)
    assert summary["kinds"] == {} and summary["shape_regression"]["chosen"]
    assert summary["after"]["all"] < summary["before"]["all"]
    refiner = RegionRefiner(tmp_path / "run" / "refiner")
    assert refiner.kinds == [] and refiner.shape is not None
    assert summary["onnx_max_difference_px"] < 1e-3  # the stored regression (float32 weights) gives the fitted one's
    with pytest.raises(AsmnetError, match="leaves nothing to train"):
        RefinerConfig(data=[str(data)], out=str(tmp_path / "x"), kinds=["none"], shape_regression=False)
