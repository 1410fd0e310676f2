"""One annotated face (:class:`FaceRecord`), and the check that its points can be a face.

Every annotation reader (``faces``, ``wflw``) builds these; they live apart from the readers so
that no reader imports another for the record type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..markup import MARKUPS

# Annotations beyond this many pixels from the origin are refused: no image within the pixel
# limit puts a face there, and such values overflow the crop arithmetic.
MAX_COORDINATE = 1e7


def key_folder(key: str) -> str:
    """The dataset folder a :attr:`FaceRecord.key` names (its first part): per-folder metrics, oversampling."""
    return key.split("/", 1)[0]


@dataclass(eq=False)
class FaceRecord:
    """One annotated face.

    ``points`` (N, 2) x, y as stored in the annotation; ``pose`` [yaw, pitch, roll] in degrees
    (300W-LP convention) or None; ``box`` x1, y1, x2, y2 from a list file or None; ``key`` a
    stable id ``"<dataset folder>/<path inside it without extension>"``.
    """

    image: Path
    points: np.ndarray
    pose: np.ndarray | None = None
    box: np.ndarray | None = None
    attributes: dict[str, int] = field(default_factory=dict)
    key: str = ""

    def __post_init__(self) -> None:
        self.image = Path(self.image)
        self.points = _vector_array(self.points, "points", (-1, 2))
        self.pose = None if self.pose is None else _vector_array(self.pose, "pose", (3,))
        self.box = None if self.box is None else _vector_array(self.box, "box", (4,))
        if not self.key:
            self.key = f"{self.image.parent.name}/{self.image.stem}"

    @property
    def n_points(self) -> int:
        """Number of landmarks."""
        return len(self.points)


def _vector_array(value: object, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as float64 with ``shape`` (-1: any positive length); ValueError otherwise."""
    array = np.asarray(value, dtype=np.float64)
    fits = array.ndim == len(shape) and all(w in (-1, s) for w, s in zip(shape, array.shape))
    if not fits or array.size == 0:
        raise ValueError(f"FaceRecord.{name} has shape {array.shape}, expected {shape} (-1: any)")
    return array


def check_points(points: np.ndarray, path: str | Path | None, line: int | None = None) -> None:
    """DataError unless ``points`` (N, 2) can be a face: within +-MAX_COORDINATE pixels, spread
    over at least one pixel and, for the 68/98-point markups, with distinct outer eye corners."""
    far = np.flatnonzero(np.abs(points).max(axis=1) > MAX_COORDINATE)
    if far.size:
        x, y = points[far[0]]
        raise DataError(path, f"point {far[0] + 1} ({x:g}, {y:g}) lies beyond +-{MAX_COORDINATE:.0f} pixels", line)
    extent = float((points.max(axis=0) - points.min(axis=0)).max())
    if not extent >= 1.0:
        raise DataError(path, f"degenerate annotation: all {len(points)} points lie within one pixel", line)
    markup = MARKUPS.get(len(points))
    if markup is None:  # a scheme of its own: no eye corners known
        return
    a, b = markup.outer_eye_corners
    if np.array_equal(points[a], points[b]):
        raise DataError(path, f"degenerate annotation: points {a + 1} and {b + 1} (the outer eye corners) "
                        "coincide", line)
