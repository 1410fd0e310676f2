"""Fit a :class:`asmnet.shape_regression.ShapeRegression` (ridge regression, closed form)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..geometry import transform_each
from ..shape_regression import ShapeRegression, frame_shapes


def fit_shape_regression(starts: Sequence[np.ndarray], truth: np.ndarray, mean_face: np.ndarray,
                         groups: Sequence[float], steps: Sequence[float], alpha: float) -> ShapeRegression:
    """Ridge fit (``alpha`` on standardised features) of the framed truth's offsets from each of
    ``starts`` (each (K, N, 2), 0-based, the predictions for the faces of ``truth``); one
    regression per size group. Returns the :class:`ShapeRegression`. Raises ValueError when a
    group holds fewer faces than twice the features."""
    mean_face, groups, steps = (np.asarray(a, dtype=np.float64) for a in (mean_face, groups, steps))
    features, targets, sizes = [], [], []
    for start in starts:
        x, framed, matrices, group = frame_shapes(start, mean_face, groups, steps)
        features.append(x)
        targets.append((transform_each(truth, matrices) - framed).reshape(len(x), -1))
        sizes.append(group)
    x, y, group = np.vstack(features), np.vstack(targets), np.concatenate(sizes)
    means, scales, weights, biases = [], [], [], []
    for g in range(len(groups) + 1):
        xg, yg = x[group == g], y[group == g]
        if len(xg) < 2 * x.shape[1]:
            raise ValueError(f"size group {g} holds {len(xg)} faces, fewer than twice its {x.shape[1]} features")
        mu, sd = xg.mean(0), xg.std(0)
        sd = np.where(sd > 1e-9, sd, 1.0)  # a constant feature (an indicator no face of the group has)
        z = (xg - mu) / sd
        bias = yg.mean(0)
        w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (yg - bias))
        means.append(mu), scales.append(sd), weights.append(w), biases.append(bias)
    return ShapeRegression(mean_face, groups, steps, np.stack(means), np.stack(scales), np.stack(weights),
                           np.stack(biases))
