"""Active Shape Model: a PCA point-distribution model of face shapes and the ASM operator.

A shape is the 2N vector (x0, y0, x1, y1, ...) in the network's normalised crop units. The model
keeps the leading eigenvectors V (2N x k) that explain a chosen share of the variance, with
eigenvalues lambda and mean s. ASM(s) = mean + V b, b = V^T (s - mean) clipped to +-3 sqrt(lambda).
NumPy only: training, evaluation and torch-free inference share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelError

SHAPE_MODEL_VERSION = 1


@dataclass
class ShapeModel:
    """PCA shape model (see module docstring). Build it with :meth:`fit`."""

    mean: np.ndarray  # (2N,)
    components: np.ndarray  # (2N, k), orthonormal columns
    eigenvalues: np.ndarray  # (k,)
    variance_share: float  # the share asked for
    explained: float  # the share the kept components explain
    n_shapes: int  # how many shapes it was fitted on
    notes: dict = field(default_factory=dict)  # how it was fitted (augmented passes, seed)

    @property
    def n_points(self) -> int:
        """Landmarks per shape."""
        return self.mean.shape[0] // 2

    @property
    def n_components(self) -> int:
        """Principal components kept."""
        return self.components.shape[1]

    @property
    def limits(self) -> np.ndarray:
        """Per-coefficient clip limit, 3 sqrt(lambda)."""
        return 3.0 * np.sqrt(self.eigenvalues)

    @classmethod
    def fit(cls, shapes: np.ndarray, variance_share: float = 0.97, notes: dict | None = None) -> ShapeModel:
        """Fit on shapes (M, 2N) or (M, N, 2); keep components up to ``variance_share``."""
        x = np.asarray(shapes, dtype=np.float64).reshape(len(shapes), -1)
        if not 0.0 < variance_share <= 1.0:
            raise ValueError(f"variance_share must be in (0, 1], got {variance_share}")
        if len(x) < 2:
            raise ValueError("a shape model needs at least 2 shapes")
        mean = x.mean(axis=0)
        # SVD of the centred data: eigenvalues of the covariance are s^2 / (M - 1)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        eig = s**2 / (len(x) - 1)
        share = np.cumsum(eig) / eig.sum()
        k = int(np.searchsorted(share, variance_share - 1e-12) + 1)
        k = min(k, len(eig))
        return cls(
            mean=mean,
            components=vt[:k].T.copy(),
            eigenvalues=eig[:k].copy(),
            variance_share=float(variance_share),
            explained=float(share[k - 1]),
            n_shapes=len(x),
            notes=dict(notes or {}),
        )

    def coefficients(self, shapes: np.ndarray) -> np.ndarray:
        """Clipped model coefficients b (..., k) of shapes (..., 2N)."""
        b = (np.asarray(shapes, dtype=np.float64) - self.mean) @ self.components
        return np.clip(b, -self.limits, self.limits)

    def project(self, shapes: np.ndarray) -> np.ndarray:
        """ASM operator: the closest plausible shape, same shape as the input (..., 2N)."""
        shapes = np.asarray(shapes, dtype=np.float64)
        flat = shapes.reshape(-1, self.mean.shape[0])  # accepts (..., 2N) and (..., N, 2)
        out = self.mean + self.coefficients(flat) @ self.components.T
        return out.reshape(shapes.shape)

    def distance(self, shapes: np.ndarray) -> np.ndarray:
        """Mean point distance between shapes and their projection, in normalised units."""
        flat = np.asarray(shapes, dtype=np.float64).reshape(-1, self.mean.shape[0])
        diff = (flat - self.project(flat)).reshape(len(flat), -1, 2)
        return np.linalg.norm(diff, axis=-1).mean(axis=-1)

    # -- serialisation: plain lists/floats, so torch.load(weights_only=True) and JSON both take it
    def to_dict(self) -> dict:
        """The shape model as plain lists and numbers (stored in checkpoints and model.json)."""
        return {
            "version": SHAPE_MODEL_VERSION,
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "eigenvalues": self.eigenvalues.tolist(),
            "variance_share": self.variance_share,
            "explained": self.explained,
            "n_shapes": self.n_shapes,
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str | Path | None = None) -> ShapeModel:
        """Parse :meth:`to_dict`'s form; :class:`ModelError` naming ``source`` when it is of
        another version, malformed or inconsistent."""
        try:
            if data.get("version") != SHAPE_MODEL_VERSION:
                raise ModelError(source, f"shape model version {data.get('version')!r} is not {SHAPE_MODEL_VERSION}")
            mean = np.asarray(data["mean"], dtype=np.float64)
            comps = np.asarray(data["components"], dtype=np.float64)
            eig = np.asarray(data["eigenvalues"], dtype=np.float64)
            share, explained, n_shapes = float(data["variance_share"]), float(data["explained"]), int(data["n_shapes"])
            notes = dict(data.get("notes", {}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(source, f"shape model is malformed ({exc})") from None
        if mean.ndim != 1 or comps.shape != (mean.shape[0], eig.shape[0]) or mean.shape[0] % 2:
            raise ModelError(source, f"shape model arrays do not agree: mean {mean.shape}, components {comps.shape}")
        # a NaN here turns every quality score (and ASM blend) into NaN
        if not (np.isfinite(mean).all() and np.isfinite(comps).all() and np.isfinite(eig).all()):
            raise ModelError(source, "shape model holds NaN or infinite values (corrupt file?)")
        if (eig < 0).any():
            raise ModelError(source, "shape model has negative eigenvalues (corrupt file?)")
        return cls(mean, comps, eig, share, explained, n_shapes, notes)
