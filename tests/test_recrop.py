"""Crops cut again around the network's own points: ``val_nme_recrop`` (validation) and ``--recrop`` (training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import template_face, tiny_train_config

from asmnet.errors import AsmnetError
from asmnet.training.config import TrainConfig
from asmnet.training.data import FaceRegion
from asmnet.training.recrop import recrop_batch, recrop_tensors
from asmnet.training.trainer import recrop_metrics, validation_tensors


def faces(n: int = 3, size: int = 160) -> list[FaceRegion]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        points = template_face() * (60 + 10 * i) + [30 + 5 * i, 25]
        out.append(FaceRegion(image, points, None))
    return out


@pytest.fixture()
def cfg(tmp_path):
    return tiny_train_config(tmp_path, tmp_path / "out")


def test_a_perfect_prediction_gives_back_the_ground_truth_crop(cfg):
    val = faces()
    crops, targets, _ = validation_tensors(val, cfg)
    again, again_targets = recrop_tensors(val, targets.numpy(), cfg)
    # the same crop up to float rounding in the round trip through image pixels
    assert (again.int() - crops.int()).abs().max() <= 1
    np.testing.assert_allclose(again_targets.numpy(), targets.numpy(), atol=1e-5)


def test_the_crop_follows_the_prediction_and_the_targets_stay_the_ground_truth(cfg):
    val = faces()
    _, targets, _ = validation_tensors(val, cfg)
    n = cfg.points
    pred = targets.numpy().reshape(len(val), n, 2).copy()
    pred[:, :, 0] += 0.05  # the prediction sits 5 % of the crop to the right of the truth
    pred[1] = (pred[1] - pred[1].mean(0)) * 0.9 + pred[1].mean(0)  # and face 1's is 10 % too small
    _, moved = recrop_tensors(val, pred.reshape(len(val), -1), cfg)
    moved = moved.numpy().reshape(len(val), n, 2)
    truth = targets.numpy().reshape(len(val), n, 2)
    # the new crop is centred on the prediction, so the true points sit 5 % to the left in it
    np.testing.assert_allclose((moved - truth)[[0, 2], :, 0].mean(1), -0.05, atol=2e-3)
    # a smaller predicted face gives a smaller crop, in which the true face looks larger
    spread = np.ptp(moved[1], axis=0) / np.ptp(truth[1], axis=0)
    np.testing.assert_allclose(spread, 1 / 0.9, rtol=2e-3)
    # scored against those targets, the crop's own points count as perfect, the old ones do not
    keys = [f"set/{i}" for i in range(len(val))]
    assert recrop_metrics(moved.reshape(len(val), -1), torch.from_numpy(moved.reshape(len(val), -1)),
                          keys, cfg)["val_nme_recrop"] == pytest.approx(0, abs=1e-9)
    assert recrop_metrics(truth.reshape(len(val), -1), torch.from_numpy(moved.reshape(len(val), -1)),
                          keys, cfg)["val_nme_recrop"] > 3


def test_a_batch_recut_around_its_own_targets_is_unchanged(cfg):
    val = faces()
    crops, targets, _ = validation_tensors(val, cfg)
    again, moved = recrop_batch(crops.float(), targets, targets, cfg.crop_scale)
    # the tight box of exact targets is the crop's own box: an identity resampling
    assert (again - crops.float()).abs().max() < 0.5
    torch.testing.assert_close(moved, targets, atol=1e-5, rtol=0)


def test_a_batch_recut_around_a_shifted_smaller_prediction():
    size, n, crop_scale = 64, 68, 1.5
    x = np.arange(size, dtype=np.float64)
    ramp = x[None, :] * 3 + x[:, None]  # value 3 x column + row: easy to follow through a resampling
    crops = torch.from_numpy(ramp).float().expand(2, 3, size, size).contiguous()
    truth = (template_face() - 0.5) * 0.6
    targets = torch.from_numpy(truth.reshape(1, -1)).float().repeat(2, 1)
    pred = np.stack([truth + [0.1, 0.0], truth * 0.8])  # face 0: 10 % of the crop to the right; face 1: 20 % small
    again, moved = recrop_batch(crops, targets, torch.from_numpy(pred.reshape(2, -1)).float(), crop_scale)
    moved = moved.numpy().reshape(2, n, 2)
    for i in range(2):
        lo, hi = pred[i].min(0), pred[i].max(0)
        centre, side = (lo + hi) / 2, crop_scale * (hi - lo).max()
        # the targets: the true points in the new crop's units
        np.testing.assert_allclose(moved[i], (truth - centre) / side, atol=1e-5)
        # the pixels: output pixel (row r, column c) reads the old crop at its units mapped back
        units = (x + 0.5) / size - 0.5
        src_x = (centre[0] + side * units + 0.5) * size - 0.5
        src_y = (centre[1] + side * units + 0.5) * size - 0.5
        expected = src_x[None, :] * 3 + src_y[:, None]
        inside = ((src_x >= 0) & (src_x <= size - 1))[None, :] & ((src_y >= 0) & (src_y <= size - 1))[:, None]
        assert inside.mean() > 0.5
        np.testing.assert_allclose(again[i, 0].numpy()[inside], expected[inside], atol=1e-3)
    # face 1's crop is 20 % smaller, so the true face fills 1 / 0.8 times as much of it
    spread = np.ptp(moved[1], axis=0) / np.ptp(moved[0], axis=0)
    np.testing.assert_allclose(spread, 1 / 0.8, rtol=1e-4)


def test_recrop_is_checked():
    base = dict(data=["d"], out="o")
    TrainConfig(**base, recrop=0.5).validate()
    with pytest.raises(AsmnetError, match="recrop"):
        TrainConfig(**base, recrop=1.5).validate()
    with pytest.raises(AsmnetError, match="teacher"):
        TrainConfig(**base, recrop=0.5, teacher=["default"]).validate()


@pytest.mark.slow
def test_training_with_recrop_trains_on_the_recut_crops_and_resumes_exactly(synthetic_set, tmp_path):
    from asmnet.nn.checkpoint import load_checkpoint
    from asmnet.training.trainer import train

    def run(out, recrop=0.5, **kw):
        return train(tiny_train_config(synthetic_set, out, recrop=recrop, ema=0.9), **kw)

    whole = run(tmp_path / "whole")
    assert np.isfinite(whole["train"]["total"]) and whole["val_nme_recrop"] > 0
    run(tmp_path / "cut", stop_after=1)  # as if killed after the first epoch's checkpoint
    run(tmp_path / "cut", resume=True)
    a = load_checkpoint(tmp_path / "whole" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    run(tmp_path / "plain", recrop=0.0)  # the same run without re-crops ends elsewhere
    c = load_checkpoint(tmp_path / "plain" / "last.pt")["state_dict"]
    assert not all(torch.equal(a[k], c[k]) for k in a)
