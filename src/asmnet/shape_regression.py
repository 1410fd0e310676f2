"""Shape regression: a linear correction of every point from the face's own predicted shape.

The landmark network and the region refiner leave errors that depend on the shape they predict
(a turned head, an open mouth, a face size that decides which parts the refiner looked at again)
and on the annotation conventions of the training photos. A ridge regression learns them: the
predicted points are framed by the similarity that maps them onto the mean face; the features are
those framed coordinates and the face's size (log inter-ocular distance, and one indicator per
size step, the sizes at which refiner kinds switch on); the output is every point's offset in
that frame. Faces are split into size groups (each with its own regression), since small and large
faces carry different errors. Torch-free (``asmnet.training.shape_regression`` fits it, in closed form).

Stored as ``shape_regression.npz`` (NumPy arrays only, read without pickle) in a refiner stage's
folder; :class:`asmnet.regions.RegionRefiner` applies it after that stage's part networks.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError
from .fileio import read_small_bytes, write_atomic
from .geometry import invert_affines, similarity_transforms, transform_each
from .markup import markup_for
from .metrics import normalising_distance

SHAPE_REGRESSION_VERSION = 1
FILE_NAME = "shape_regression.npz"


@dataclass(frozen=True)
class ShapeRegression:
    """A fitted shape regression: ``mean_face`` (N, 2), the size ``groups`` edges (inter-ocular px;
    group g holds faces between edge g-1 and edge g), the size ``steps`` of the features, and per
    group the features' mean and scale (G, F) and the linear map ``weights`` (G, F, 2N), ``bias`` (G, 2N)."""

    mean_face: np.ndarray
    groups: np.ndarray
    steps: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    @property
    def num_points(self) -> int:
        return len(self.mean_face)

    def apply(self, points: np.ndarray, origin: float = 0.0) -> np.ndarray:
        """Corrected copy of ``points`` (K, N, 2; pixel centres at ``origin``)."""
        points = np.asarray(points, dtype=np.float64)
        if len(points) == 0:
            return points.copy()
        features, framed, matrices, group = frame_shapes(points - origin, self.mean_face, self.groups, self.steps)
        offsets = np.empty((len(points), self.weights.shape[2]))
        for g in np.unique(group):  # one product per size group: no per-face copy of its weights
            rows = group == g
            offsets[rows] = (features[rows] - self.mean[g]) / self.scale[g] @ self.weights[g] + self.bias[g]
        moved = framed + offsets.reshape(framed.shape)
        return transform_each(moved, invert_affines(matrices)) + origin

    def save(self, path: str | Path) -> None:
        """Write the arrays (atomically) to ``path`` (.npz)."""
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float32 if name == "weights" else np.float64)
                  for name in ("mean_face", "groups", "steps", "mean", "scale", "weights", "bias")}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, version=np.array(SHAPE_REGRESSION_VERSION), **arrays)

        write_atomic(path, write)

    @classmethod
    def load(cls, path: str | Path) -> ShapeRegression:
        """Read and check a ``.npz`` written by :meth:`save`; raises :class:`ModelError` (one line)."""
        raw = read_small_bytes(path, "shape regression")
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                arrays = {name: np.array(data[name], dtype=np.float64) for name in
                          ("version", "mean_face", "groups", "steps", "mean", "scale", "weights", "bias")}
        except (KeyError, ValueError, OSError, EOFError) as exc:
            raise ModelError(path, f"not a shape regression file ({type(exc).__name__}: {exc})") from None
        if int(arrays.pop("version")) != SHAPE_REGRESSION_VERSION:
            raise ModelError(path, f"shape regression version is not {SHAPE_REGRESSION_VERSION}")
        regression = cls(**arrays)
        problem = regression.problem()
        if problem:
            raise ModelError(path, problem)
        return regression

    def problem(self) -> str | None:
        """What is inconsistent about the arrays (shapes, values), or None."""
        n = self.mean_face.shape[0] if self.mean_face.ndim == 2 else -1
        g, f = len(self.groups) + 1, 2 * n + 2 + len(self.steps)
        expected = {"mean_face": (n, 2), "mean": (g, f), "scale": (g, f), "weights": (g, f, 2 * n), "bias": (g, 2 * n)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                return f"{name} has shape {getattr(self, name).shape}, expected {shape}"
        if self.groups.ndim != 1 or self.steps.ndim != 1 or np.any(np.diff(self.groups) <= 0):
            return "groups and steps must be 1-D (groups increasing)"
        if n not in (68, 98) or not all(np.isfinite(getattr(self, k)).all() for k in expected) or (self.scale <= 0).any():
            return "values out of range (point count 68 or 98, finite numbers, positive scales)"
        return None


def frame_shapes(points: np.ndarray, mean_face: np.ndarray, groups: np.ndarray, steps: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features (K, F), framed points (K, N, 2), image -> frame matrices (K, 2, 3) and size group
    (K,) of ``points`` (K, N, 2, 0-based pixels), framed on ``mean_face`` (N, 2)."""
    points = np.asarray(points, dtype=np.float64)
    matrices = similarity_transforms(points, mean_face)
    iod = normalising_distance(points, markup_for(len(mean_face)))
    framed = transform_each(points, matrices)
    return size_features(framed, iod, steps), framed, matrices, np.searchsorted(groups, iod, side="right")


def size_features(framed: np.ndarray, iod: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Features (K, F) of framed points (K, N, 2) of faces whose eyes are ``iod`` px apart."""
    log_iod = np.log(np.maximum(iod, 1.0))[:, None]
    indicators = [(iod >= step)[:, None].astype(np.float64) for step in steps]
    return np.hstack([framed.reshape(len(framed), -1), log_iod, log_iod**2, *indicators])
