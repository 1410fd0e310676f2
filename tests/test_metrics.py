"""Tests of asmnet.metrics with hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asmnet import metrics
from asmnet.markup import IBUG_68, WFLW_98
from asmnet.metrics import (
    NORMALISATIONS,
    auc,
    ced,
    failure_rate,
    nme,
    normalising_distance,
    plot_ced,
    pose_mae,
    summarize,
)

GRID_TOL = 1e-3


def _face68() -> np.ndarray:
    """A 68-point face: outer eye corners 100 px apart, each eye a 20 x 10 rectangle of points."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(150.0, 250.0, size=(68, 2))
    pts[36] = (100.0, 200.0)
    pts[45] = (200.0, 200.0)
    left = [(100, 200), (105, 195), (115, 195), (120, 200), (115, 205), (105, 205)]
    right = [(180, 200), (185, 195), (195, 195), (200, 200), (195, 205), (185, 205)]
    pts[36:42] = left
    pts[42:48] = right
    return pts


def test_normalisations_listed() -> None:
    assert NORMALISATIONS == ("inter-ocular", "inter-pupil", "box")


def test_nme_offset_3_4_is_five_percent() -> None:
    gt = _face68()
    pred = gt + np.array([3.0, 4.0])
    result = nme(pred, gt, IBUG_68)
    assert result.shape == (1,)
    assert result[0] == pytest.approx(5.0, abs=1e-12)


def test_nme_batch_and_default_markup() -> None:
    gt = np.stack([_face68(), _face68() * 2.0])
    pred = gt + np.array([3.0, 4.0])
    np.testing.assert_allclose(nme(pred, gt), [5.0, 2.5])


def test_inter_pupil_68_by_hand() -> None:
    gt = _face68()
    # eye centres (110, 200) and (190, 200): d = 80; offset 5 px -> 6.25 %
    assert normalising_distance(gt, IBUG_68, "inter-pupil")[0] == pytest.approx(80.0)
    assert nme(gt + [3.0, 4.0], gt, IBUG_68, "inter-pupil")[0] == pytest.approx(6.25)


def test_inter_pupil_98_uses_pupil_points() -> None:
    gt = np.zeros((98, 2))
    gt[:, 0] = np.linspace(0.0, 300.0, 98)
    gt[:, 1] = 100.0
    gt[96] = (120.0, 100.0)
    gt[97] = (180.0, 140.0)  # d = sqrt(60^2 + 40^2)
    d = normalising_distance(gt, WFLW_98, "inter-pupil")
    assert d[0] == pytest.approx(np.hypot(60.0, 40.0))


def test_box_normalisation_by_hand() -> None:
    gt = _face68()
    gt[0] = (50.0, 100.0)
    gt[1] = (250.0, 325.0)  # tight box 200 x 225 -> sqrt = 212.13...
    expected_d = np.sqrt(200.0 * 225.0)
    assert normalising_distance(gt, IBUG_68, "box")[0] == pytest.approx(expected_d)
    assert nme(gt + [3.0, 4.0], gt, IBUG_68, "box")[0] == pytest.approx(500.0 / expected_d)


def test_mixed_errors_mean_over_points() -> None:
    gt = _face68()
    pred = gt.copy()
    pred[:34] += [6.0, 8.0]  # half the points off by 10 px, half exact -> mean 5 px -> 5 %
    assert nme(pred, gt, IBUG_68)[0] == pytest.approx(5.0)


def test_unknown_norm_and_zero_distance() -> None:
    gt = _face68()
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalising_distance(gt, IBUG_68, "diagonal")
    bad = np.stack([gt, gt.copy()])
    bad[1, 45] = bad[1, 36]
    with pytest.raises(ValueError, match="face 1"):
        nme(bad, bad, IBUG_68)


def test_shape_mismatch_rejected() -> None:
    gt = _face68()
    with pytest.raises(ValueError):
        nme(gt[:60], gt, IBUG_68)
    with pytest.raises(ValueError):
        nme(gt, gt, WFLW_98)


def test_failure_rate_thresholds() -> None:
    nmes = [1.0, 8.0, 8.5, 10.0, 12.0]
    assert failure_rate(nmes, 8.0) == pytest.approx(60.0)  # strictly above 8
    assert failure_rate(nmes, 10.0) == pytest.approx(20.0)
    assert failure_rate(nmes, 20.0) == 0.0
    assert failure_rate(nmes, 0.5) == 100.0


def test_ced_shape_and_values() -> None:
    thresholds, fractions = ced([1.0, 3.0], max_percent=4.0, steps=5)
    np.testing.assert_allclose(thresholds, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(fractions, [0, 0.5, 0.5, 1.0, 1.0])
    thresholds, _ = ced([1.0])
    assert thresholds.shape == (1001,) and thresholds[-1] == 10.0


def test_auc_perfect_and_half() -> None:
    assert auc(np.zeros(10), 8.0) == pytest.approx(1.0)
    assert auc(np.full(7, 4.0), 8.0) == pytest.approx(0.5, abs=GRID_TOL)
    assert auc(np.full(3, 9.0), 8.0) == 0.0


def test_auc_mixed_by_hand() -> None:
    # each face contributes (x - e) / x when e < x: (8 + 6 + 4 + 0) / 8 / 4 = 0.5625
    assert auc([0.0, 2.0, 4.0, 10.0], 8.0) == pytest.approx(0.5625, abs=GRID_TOL)
    # at 10 %: (10 + 8 + 6 + 0) / 10 / 4 = 0.6
    assert auc([0.0, 2.0, 4.0, 10.0], 10.0) == pytest.approx(0.6, abs=GRID_TOL)


def test_nan_nmes_rejected() -> None:
    with pytest.raises(ValueError):
        failure_rate([1.0, np.nan], 8.0)
    with pytest.raises(ValueError):
        auc([], 8.0)


def test_pose_mae_skips_unlabelled_rows() -> None:
    gt = np.array([[10.0, 0.0, -5.0], [np.nan, 1.0, 2.0], [-20.0, 4.0, 5.0]])
    pred = np.array([[12.0, -1.0, -5.0], [99.0, 99.0, 99.0], [-17.0, 4.0, 1.0]])
    result = pose_mae(pred, gt)
    assert set(result) == {"yaw", "pitch", "roll"}
    assert result["yaw"] == pytest.approx(2.5)
    assert result["pitch"] == pytest.approx(0.5)
    assert result["roll"] == pytest.approx(2.0)


def test_pose_mae_none_without_labels() -> None:
    gt = np.full((2, 3), np.nan)
    assert pose_mae(np.zeros((2, 3)), gt) is None


def test_summarize_keys_and_json() -> None:
    nmes = np.array([2.0, 4.0, 9.0, 12.0], dtype=np.float32)
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    pose_gt = np.array([[1.0, 2.0, 3.0], [np.nan] * 3, [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    summary = summarize(nmes, names, pose_gt + 1.0, pose_gt)
    required = {
        "n",
        "nme_mean",
        "nme_median",
        "fr_0.08",
        "fr_0.10",
        "auc_0.08",
        "auc_0.10",
        "pose_mae",
        "per_image",
    }
    assert required <= set(summary)
    assert summary["n"] == 4 and isinstance(summary["n"], int)
    assert summary["nme_mean"] == pytest.approx(6.75)
    assert summary["nme_median"] == pytest.approx(6.5)
    assert summary["fr_0.08"] == pytest.approx(50.0)
    assert summary["fr_0.10"] == pytest.approx(25.0)
    assert summary["auc_0.08"] == pytest.approx((6 + 4) / 8 / 4, abs=GRID_TOL)
    assert summary["auc_0.10"] == pytest.approx((8 + 6 + 1) / 10 / 4, abs=GRID_TOL)
    assert summary["pose_mae"] == pytest.approx({"yaw": 1.0, "pitch": 1.0, "roll": 1.0})
    assert summary["per_image"][2] == {"image": "c.jpg", "nme": 9.0}
    assert type(summary["per_image"][0]["nme"]) is float
    assert json.loads(json.dumps(summary)) == summary


def test_summarize_without_pose_and_bad_lengths() -> None:
    summary = summarize([1.0], ["x"])
    assert summary["pose_mae"] is None
    json.dumps(summary)
    with pytest.raises(ValueError):
        summarize([1.0, 2.0], ["x"])
    with pytest.raises(ValueError):
        summarize([1.0], ["x"], pose_pred=np.zeros((1, 3)))


def test_plot_ced_writes_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots" / "ced.png"
    rng = np.random.default_rng(1)
    curves = {"ours": rng.gamma(4.0, 1.0, 200), "baseline": rng.gamma(5.0, 1.0, 200)}
    written = plot_ced(curves, out, title="300W common")
    assert written == out
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    assert [p.name for p in out.parent.iterdir()] == ["ced.png"]  # no temporary file left


def test_roc_auc_equals_the_pairwise_count_with_ties_half():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, 80).astype(float)  # many ties
    positive = rng.random(80) < 0.3
    pos, neg = scores[positive], scores[~positive]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert metrics.roc_auc(scores, positive) == pytest.approx(pairwise)
    assert metrics.roc_auc(scores, np.zeros(80, bool)) is None


def test_flag_report_counts_failures_caught():
    quality = np.array([0.5, 3.0, 0.2, 4.0])
    nmes = np.array([3.0, 9.0, 12.0, 5.0])
    rep = metrics.flag_report(quality, nmes, threshold=1.0)
    assert rep["failures_caught"] == "1 of 2" and rep["flag_share"] == 0.5
    assert rep["fr_0.08_among_flagged"] == 50.0 and rep["fr_0.08_among_unflagged"] == 50.0
    assert rep["roc_auc_nme_gt_8"] == pytest.approx(0.25)  # failures score 3.0, 0.2; good 0.5, 4.0
