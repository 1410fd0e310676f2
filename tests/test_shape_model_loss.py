"""ASM shape model and ASM-LOSS: the properties the design brief asks for, and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import template_face

from asmnet.errors import ModelError
from asmnet.nn.losses import WING_CURVATURE, WING_WIDTH, ASMLoss, ASMProjector, asm_weight, wing
from asmnet.shape_model import ShapeModel


def shapes(n: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = template_face() - 0.5
    out = []
    for _ in range(n):
        a = np.deg2rad(rng.normal(0, 10))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        s = base @ rot.T * rng.uniform(0.6, 0.8) + rng.normal(0, 0.02, 2)
        out.append((s + rng.normal(0, 0.004, s.shape)).reshape(-1))
    return np.stack(out)


def test_projecting_the_mean_returns_it():
    sm = ShapeModel.fit(shapes(), 0.95)
    assert np.allclose(sm.project(sm.mean), sm.mean)


def test_projection_is_idempotent():
    sm = ShapeModel.fit(shapes(), 0.9)
    x = shapes(20, seed=1) * 1.5  # includes shapes beyond the clip limits
    once = sm.project(x)
    assert np.allclose(sm.project(once), once, atol=1e-12)


def test_more_variance_means_smaller_reconstruction_error():
    train, test = shapes(400), shapes(50, seed=2)
    errors = [ShapeModel.fit(train, v).distance(test).mean() for v in (0.8, 0.9, 0.97, 0.995)]
    ks = [ShapeModel.fit(train, v).n_components for v in (0.8, 0.9, 0.97, 0.995)]
    assert ks == sorted(ks) and ks[0] < ks[-1]
    assert all(a >= b for a, b in zip(errors, errors[1:])) and errors[0] > errors[-1]


def test_coefficients_are_clipped_to_three_sigma():
    sm = ShapeModel.fit(shapes(), 0.95)
    far = sm.mean + 100 * sm.components[:, 0]
    assert np.allclose(sm.coefficients(far)[0], sm.limits[0])


def test_accepts_points_layout_and_round_trips_through_a_dict():
    sm = ShapeModel.fit(shapes(), 0.97, notes={"passes": 1})
    pts = shapes(3, seed=3).reshape(3, 68, 2)
    assert sm.project(pts).shape == (3, 68, 2)
    again = ShapeModel.from_dict(sm.to_dict())
    assert np.allclose(again.project(pts), sm.project(pts)) and again.notes == {"passes": 1}
    bad = sm.to_dict() | {"version": 99}
    with pytest.raises(ModelError):
        ShapeModel.from_dict(bad, "x.json")


def test_torch_projector_matches_numpy():
    sm = ShapeModel.fit(shapes(), 0.97)
    x = shapes(5, seed=4) * 1.2
    got = ASMProjector(sm)(torch.tensor(x, dtype=torch.float32)).numpy()
    assert np.allclose(got, sm.project(x), atol=1e-5)


@pytest.mark.parametrize("epoch, weight", [(0, 2.0), (32, 2.0), (33, 2.0), (34, 1.0), (66, 1.0), (67, 0.5), (99, 0.5)])
def test_schedule_weights(epoch, weight):
    # E = 100: w = 2 while e < 33.3, 1 while e < 66.7, then 0.5
    assert asm_weight(epoch, 100) == weight


def tiny_model() -> ShapeModel:
    # 1 point (2 values), 1 component along x, eigenvalue 1: ASM keeps x (clipped to +-3), zeroes y
    return ShapeModel(np.zeros(2), np.array([[1.0], [0.0]]), np.array([1.0]), 0.9, 0.9, 10)


def test_loss_equals_hand_computed_value():
    pred = torch.tensor([[1.0, 2.0]])
    gt = torch.tensor([[4.0, 1.0]])  # ASM(gt) = (3, 0): x clipped at 3 sqrt(1), y removed
    pred_pose, gt_pose = torch.tensor([[9.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    loss, parts = ASMLoss(tiny_model(), "asm", "mse")(pred, pred_pose, gt, gt_pose, epoch=0, total_epochs=3)
    exact = ((1 - 4) ** 2 + (2 - 1) ** 2) / 2  # 5.0
    smooth = ((1 - 3) ** 2 + (2 - 0) ** 2) / 2  # 4.0
    pose = (9 / 90) ** 2 / 3  # 0.00333...
    assert parts["points"] == pytest.approx(exact) and parts["asm"] == pytest.approx(smooth)
    assert float(loss) == pytest.approx(exact + 2.0 * smooth + pose)
    late, _ = ASMLoss(tiny_model(), "asm", "mse")(pred, pred_pose, gt, gt_pose, epoch=2, total_epochs=3)
    assert float(late) == pytest.approx(exact + 0.5 * smooth + pose)
    plain, parts = ASMLoss(tiny_model(), "mse", "mse")(pred, pred_pose, gt, gt_pose, epoch=0, total_epochs=3)
    assert "asm" not in parts and float(plain) == pytest.approx(exact + pose)
    l1, _ = ASMLoss(tiny_model(), "asm", "l1")(pred, pred_pose, gt, gt_pose, epoch=0, total_epochs=3)
    assert float(l1) == pytest.approx(2.0 + 2.0 * 2.0 + pose)


def test_wing_loss_values_continuity_and_slopes():
    w, eps = WING_WIDTH, WING_CURVATURE
    small = torch.tensor([0.5 * eps, -0.5 * eps])
    assert torch.allclose(wing(small), torch.full((2,), w * np.log1p(0.5)))
    # the log piece and the shifted L1 piece meet at |x| = w, and beyond it the slope is 1 as L1
    x = torch.tensor([w - 1e-6, w + 1e-6, 2 * w, 3 * w], dtype=torch.float64, requires_grad=True)
    y = wing(x)
    assert float((y[1] - y[0]).detach()) == pytest.approx(0, abs=1e-5)
    assert float((y[3] - y[2]).detach()) == pytest.approx(w)
    y.sum().backward()
    assert torch.allclose(x.grad[2:], torch.ones(2, dtype=torch.float64))
    # near 0 it pulls harder than L1 (slope w / eps), which is the point of it
    z = torch.tensor([1e-4], requires_grad=True)
    wing(z).sum().backward()
    assert float(z.grad) == pytest.approx(w / (eps + 1e-4), rel=1e-3)
    pred, gt = torch.tensor([[0.01, -0.02]]), torch.zeros(1, 2)
    loss, parts = ASMLoss(tiny_model(), "mse", "wing")(pred, torch.zeros(1, 3), gt, torch.zeros(1, 3), 0, 3)
    assert parts["points"] == pytest.approx(float(wing(pred).mean()))


def test_unlabelled_pose_is_masked():
    pred, gt = torch.zeros(2, 2), torch.zeros(2, 2)
    pose = torch.tensor([[float("nan")] * 3, [9.0, 0.0, 0.0]])
    _, parts = ASMLoss(tiny_model(), "mse")(pred, torch.zeros(2, 3), gt, pose, 0, 3)
    assert parts["pose"] == pytest.approx((9 / 90) ** 2 / 3)


def test_rejects_unknown_loss_names():
    with pytest.raises(ValueError):
        ASMLoss(tiny_model(), "huber")
    with pytest.raises(ValueError):
        ASMLoss(tiny_model(), "asm", "huber")
