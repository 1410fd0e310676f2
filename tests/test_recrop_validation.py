"""``val_nme_recrop``: validation crops taken from the network's own points, as the second look takes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import template_face, tiny_train_config

from asmnet.training.data import FaceRegion
from asmnet.training.trainer import recrop_metrics, recrop_tensors, validation_tensors


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
