"""300W-LP / AFLW2000-3D ``.mat`` annotations: 68 landmarks and ``Pose_Para``.

Landmarks come from the first of these keys that the file has:

* ``pt3d_68``: 3 x N (AFLW2000-3D; rows x, y, z; x and y are used),
* ``pt2d``: 2 x N (300W-LP image folders),
* ``pts_2d``: N x 2 (300W-LP ``landmarks/*_pts.mat``),
* ``pts_3d``: N x 2 or N x 3 (300W-LP ``landmarks/*_pts.mat``; x and y are used).

``Pose_Para`` = [pitch, yaw, roll, tx, ty, tz, scale] with angles in radians; it is returned as
degrees in the package order [yaw, pitch, roll], with no sign change (the package's convention
is 300W-LP's own). Coordinates are returned exactly as stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

LANDMARK_KEYS = ("pt3d_68", "pt2d", "pts_2d", "pts_3d")


def _load(path: str | Path) -> dict[str, Any]:
    """The variables of a MATLAB file, via SciPy (imported only here)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(path, "reading .mat files needs SciPy: pip install scipy") from None
    if not Path(path).is_file():
        raise DataError(path, "no such file")
    try:
        return loadmat(str(path))
    except NotImplementedError:
        raise DataError(path, "MATLAB v7.3 (HDF5) .mat files are not supported") from None
    except Exception as exc:  # noqa: BLE001 - SciPy raises many types for corrupt files
        raise DataError(path, f"unreadable .mat file ({type(exc).__name__}: {exc})") from None


def _numeric(value: Any, key: str, path: str | Path) -> np.ndarray:
    """``value`` as a finite float64 array; DataError otherwise."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(path, f"{key} is not a numeric array") from None
    if not np.isfinite(array).all():
        raise DataError(path, f"{key} holds NaN or infinite values")
    return array


def _landmarks(key: str, array: np.ndarray, path: str | Path) -> np.ndarray:
    """(N, 2) x, y from the stored layout of ``key``."""
    rows_first = key in ("pt3d_68", "pt2d")
    wanted = {"pt3d_68": (3,), "pt2d": (2,), "pts_2d": (2,), "pts_3d": (2, 3)}[key]
    size = array.shape[0] if rows_first else (array.shape[1] if array.ndim == 2 else -1)
    if array.ndim != 2 or size not in wanted or array.size == 0:
        layout = " or ".join(f"{d} x N" if rows_first else f"N x {d}" for d in wanted)
        raise DataError(path, f"{key} has shape {array.shape}, expected {layout}")
    xy = array[:2].T if rows_first else array[:, :2]
    return np.ascontiguousarray(xy, dtype=np.float64)


def _pose(variables: dict[str, Any], path: str | Path) -> np.ndarray | None:
    """[yaw, pitch, roll] degrees from ``Pose_Para``, or None when absent."""
    if "Pose_Para" not in variables:
        return None
    para = _numeric(variables["Pose_Para"], "Pose_Para", path).ravel()
    if para.size < 3:
        raise DataError(path, f"Pose_Para has {para.size} values, expected at least 3 (pitch, yaw, roll)")
    pitch, yaw, roll = para[:3]
    return np.degrees(np.asarray([yaw, pitch, roll], dtype=np.float64))


def read_pose_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Landmarks (N, 2) and pose [yaw, pitch, roll] in degrees (None if absent) from a .mat file."""
    variables = _load(path)
    key = next((k for k in LANDMARK_KEYS if k in variables), None)
    if key is None:
        raise DataError(path, f"no landmarks: expected one of the keys {', '.join(LANDMARK_KEYS)}")
    points = _landmarks(key, _numeric(variables[key], key, path), path)
    return points, _pose(variables, path)
