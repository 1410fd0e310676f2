"""Landmark and head-pose metrics: NME, failure rate, CED / AUC, pose MAE, summaries and CED plots.

Conventions (design brief, section 5): NME and failure rates are in percent, AUC is a fraction in
[0, 1]. The default normalisation is inter-ocular (outer eye corners), as in the paper's tables.
Only NumPy is needed; matplotlib is imported inside :func:`plot_ced`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .markup import Markup, markup_for

NORMALISATIONS = ("inter-ocular", "inter-pupil", "box")

_POSE_NAMES = ("yaw", "pitch", "roll")
_DEFAULT_AUC_STEPS = 10001


def _as_batch(points: np.ndarray, what: str) -> np.ndarray:
    """``points`` as a float (B, N, 2) array; a single (N, 2) face becomes a batch of one."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"{what} must have shape (B, N, 2) or (N, 2), got {np.shape(points)}")
    return arr


def _resolve_markup(markup: Markup | None, n_points: int) -> Markup:
    """``markup`` itself, or the standard markup for ``n_points`` when it is None."""
    resolved = markup_for(n_points) if markup is None else markup
    if resolved.n_points != n_points:
        raise ValueError(f"markup {resolved.name} has {resolved.n_points} points, the data has {n_points}")
    return resolved


def _inter_ocular(gt: np.ndarray, markup: Markup) -> np.ndarray:
    a, b = markup.outer_eye_corners
    return np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)


def _inter_pupil(gt: np.ndarray, markup: Markup) -> np.ndarray:
    if markup.pupils is not None:  # the pupils themselves (WFLW); else each eye's mean point
        left, right = gt[:, markup.pupils[0]], gt[:, markup.pupils[1]]
    else:
        left = gt[:, list(markup.left_eye)].mean(axis=1)
        right = gt[:, list(markup.right_eye)].mean(axis=1)
    return np.linalg.norm(left - right, axis=-1)


def _box_size(gt: np.ndarray) -> np.ndarray:
    span = gt.max(axis=1) - gt.min(axis=1)
    return np.sqrt(span[:, 0] * span[:, 1])


def normalising_distance(
    gt: np.ndarray, markup: Markup | None = None, norm: str = "inter-ocular"
) -> np.ndarray:
    """Per-face normalising distance d in pixels, shape (B,).

    ``gt`` is (B, N, 2) or a single (N, 2) face (result shape (1,)). ``norm``: "inter-ocular" (outer
    eye corners), "inter-pupil" (distance of the eye centres: the means of each eye's points, or
    WFLW's pupil points 96 / 97 for 98 points) or "box" (sqrt(w * h) of the tight box of ``gt``).
    ``markup`` None picks the standard markup for the number of points.
    """
    batch = _as_batch(gt, "gt")
    scheme = _resolve_markup(markup, batch.shape[1])
    if norm == "inter-ocular":
        return _inter_ocular(batch, scheme)
    if norm == "inter-pupil":
        return _inter_pupil(batch, scheme)
    if norm == "box":
        return _box_size(batch)
    raise ValueError(f"unknown normalisation {norm!r}; choose one of {NORMALISATIONS}")


def nme(
    pred: np.ndarray, gt: np.ndarray, markup: Markup | None = None, norm: str = "inter-ocular"
) -> np.ndarray:
    """Per-face normalised mean error in percent, shape (B,).

    NME = mean_i ||pred_i - gt_i|| / d * 100 with d from :func:`normalising_distance`. Raises
    ValueError when shapes differ or a face has a zero normalising distance.
    """
    p, g = _as_batch(pred, "pred"), _as_batch(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")
    d = normalising_distance(g, markup, norm)
    bad = np.flatnonzero(~(d > 0))
    if bad.size:
        raise ValueError(f"face {int(bad[0])} has a zero {norm} normalising distance")
    errors = np.linalg.norm(p - g, axis=-1).mean(axis=1)
    return errors / d * 100.0


def _check_nmes(nmes: np.ndarray | Sequence[float]) -> np.ndarray:
    """``nmes`` as a non-empty 1-D float array of finite values."""
    arr = np.asarray(nmes, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("no NME values given")
    if not np.all(np.isfinite(arr)):
        raise ValueError("NME values must be finite")
    return arr


def failure_rate(nmes: np.ndarray | Sequence[float], threshold_percent: float) -> float:
    """Percentage of faces whose NME (percent) is strictly above ``threshold_percent``."""
    arr = _check_nmes(nmes)
    return float(np.mean(arr > threshold_percent) * 100.0)


def ced(
    nmes: np.ndarray | Sequence[float], max_percent: float = 10.0, steps: int = 1001
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: (thresholds, fraction of faces with NME <= threshold).

    Thresholds are ``steps`` evenly spaced values from 0 to ``max_percent`` (percent).
    """
    if max_percent <= 0 or steps < 2:
        raise ValueError("ced needs max_percent > 0 and steps >= 2")
    arr = np.sort(_check_nmes(nmes))
    thresholds = np.linspace(0.0, float(max_percent), int(steps))
    fractions = np.searchsorted(arr, thresholds, side="right") / arr.size
    return thresholds, fractions


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid-rule integral of samples ``y`` over the grid ``x``."""
    return float(np.sum((y[1:] + y[:-1]) * 0.5 * np.diff(x)))


def auc(
    nmes: np.ndarray | Sequence[float], threshold_percent: float, steps: int = _DEFAULT_AUC_STEPS
) -> float:
    """Area under the CED up to ``threshold_percent``, divided by it: a fraction in [0, 1]."""
    thresholds, fractions = ced(nmes, threshold_percent, steps)
    return _trapezoid(fractions, thresholds) / float(threshold_percent)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC: the probability that a random positive scores above a random negative (ties count
    half; Mann-Whitney with average ranks). None when either class is empty."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based average rank of each value's tie group
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def flag_report(quality: np.ndarray, nmes: np.ndarray, threshold: float) -> dict:
    """How a quality flag (``quality > threshold``) catches failures (NME > 8 %): the figures a model
    card's ``quality`` holds (ROC AUC, flagged share, FR@8 among flagged / unflagged, caught)."""
    quality, nmes = np.asarray(quality, dtype=np.float64), np.asarray(nmes, dtype=np.float64)
    flagged, fail = quality > threshold, nmes > 8.0
    return {
        "roc_auc_nme_gt_8": roc_auc(quality, fail),
        "threshold": threshold,
        "flag_share": float(flagged.mean()),
        "fr_0.08_among_flagged": float(fail[flagged].mean() * 100) if flagged.any() else None,
        "fr_0.08_among_unflagged": float(fail[~flagged].mean() * 100),
        "failures_caught": f"{int((fail & flagged).sum())} of {int(fail.sum())}",
    }


def _as_poses(poses: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{what} must have shape (B, 3) of (yaw, pitch, roll), got {np.shape(poses)}")
    return arr


def pose_mae(pred: np.ndarray, gt: np.ndarray) -> dict[str, float] | None:
    """Mean absolute error in degrees per angle: {"yaw", "pitch", "roll"}.

    Rows whose ground truth holds a NaN are unlabelled and skipped; None when no row is labelled.
    Raises ValueError if a prediction for a labelled row is not finite.
    """
    p, g = _as_poses(pred, "pose pred"), _as_poses(gt, "pose gt")
    if p.shape != g.shape:
        raise ValueError(f"pose pred {p.shape} and gt {g.shape} differ in shape")
    labelled = ~np.isnan(g).any(axis=1)
    if not labelled.any():
        return None
    if not np.all(np.isfinite(p[labelled])):
        raise ValueError("pose predictions of labelled faces must be finite")
    errors = np.abs(p[labelled] - g[labelled]).mean(axis=0)
    return {name: float(err) for name, err in zip(_POSE_NAMES, errors)}


def _pose_summary(pose_pred: np.ndarray | None, pose_gt: np.ndarray | None) -> tuple[dict | None, int]:
    """(pose MAE dict or None, number of labelled faces) for :func:`summarize`."""
    if pose_pred is None and pose_gt is None:
        return None, 0
    if pose_pred is None or pose_gt is None:
        raise ValueError("give both pose_pred and pose_gt, or neither")
    labelled = int((~np.isnan(_as_poses(pose_gt, "pose gt")).any(axis=1)).sum())
    return pose_mae(pose_pred, pose_gt), labelled


def summarize(
    nmes: np.ndarray | Sequence[float],
    image_names: Sequence[str],
    pose_pred: np.ndarray | None = None,
    pose_gt: np.ndarray | None = None,
) -> dict:
    """JSON-ready summary of an evaluation (plain Python numbers only).

    Keys: n, nme_mean, nme_median (percent), fr_0.08 / fr_0.10 (failure rates in percent at 8 % and
    10 %), auc_0.08 / auc_0.10 (fractions), pose_mae ({"yaw", "pitch", "roll"} or None), pose_n
    (labelled faces used for pose_mae) and per_image ([{"image", "nme"}] in input order).
    """
    arr = _check_nmes(nmes)
    names = [str(name) for name in image_names]
    if len(names) != arr.size:
        raise ValueError(f"{len(names)} image names for {arr.size} NME values")
    mae, pose_n = _pose_summary(pose_pred, pose_gt)
    return {
        "n": int(arr.size),
        "nme_mean": float(arr.mean()),
        "nme_median": float(np.median(arr)),
        "fr_0.08": failure_rate(arr, 8.0),
        "fr_0.10": failure_rate(arr, 10.0),
        "auc_0.08": auc(arr, 8.0),
        "auc_0.10": auc(arr, 10.0),
        "pose_mae": mae,
        "pose_n": pose_n,
        "per_image": [{"image": name, "nme": float(value)} for name, value in zip(names, arr)],
    }


def _curve_label(label: str, nmes: np.ndarray) -> str:
    """Legend text of one method: its mean NME and AUC@8 %."""
    return f"{label}: NME {nmes.mean():.2f} %, AUC@0.08 {auc(nmes, 8.0):.3f}"


def _save_figure_atomically(figure, out_png: Path) -> None:
    """Write ``figure`` as PNG atomically (temporary file in the target folder, then rename)."""
    from .fileio import write_atomic

    write_atomic(out_png, lambda tmp: figure.savefig(tmp, format="png", dpi=120))


def plot_ced(
    curves: Mapping[str, np.ndarray],
    out_png: str | os.PathLike,
    max_percent: float = 10.0,
    title: str | None = None,
) -> Path:
    """Plot the CED curves of several methods (label -> per-face NMEs in percent) into one PNG.

    Uses matplotlib's Agg canvas without pyplot (no global backend change). The legend shows each
    method's mean NME and AUC@0.08. The file is written atomically; returns its path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("plot_ced needs at least one curve")
    figure = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for label, values in curves.items():
        arr = _check_nmes(values)
        thresholds, fractions = ced(arr, max_percent)
        axes.plot(thresholds, fractions, label=_curve_label(str(label), arr))
    axes.set_xlim(0.0, max_percent)
    axes.set_ylim(0.0, 1.0)
    axes.set_xlabel("NME (%)")
    axes.set_ylabel("fraction of faces")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    if title:
        axes.set_title(title)
    target = Path(out_png)
    _save_figure_atomically(figure, target)
    return target
