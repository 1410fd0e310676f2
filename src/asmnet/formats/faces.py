"""Annotated faces from any supported source: 300W folders, WFLW lists, .pts and .mat files.

:func:`load_faces` never decodes images (it only checks that they exist) and never stops at one
bad file: malformed annotations come back as :class:`DataError` entries beside the faces. Points
that cannot be a face (see :func:`check_points`) are refused here, so that no crop or NME fails
later, deep inside training or evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, DataNote
from .face_record import FaceRecord, check_points
from .image import IMAGE_EXTENSIONS
from .mat import read_pose_mat
from .pose_csv import read_pose_csv
from .pts import read_pts
from .wflw import parse_wflw_list

POSE_CSV = "pose.csv"
_ANNOTATIONS = (".pts", ".mat")


# A face is off its image when a point lies beyond the image border by more than this share of the
# face's size (its landmark box's longer side): faces cut by the border keep their outside points
# (a jaw below the frame), while an annotation of another image, or one scaled wrongly, is caught.
OFF_IMAGE_MARGIN = 0.5


def check_on_image(points: np.ndarray, width: int, height: int, path: str | Path | None) -> None:
    """DataError when ``points`` (N, 2) lie off a ``width`` x ``height`` image (see
    OFF_IMAGE_MARGIN): an annotation that cannot belong to this picture."""
    size = float((points.max(axis=0) - points.min(axis=0)).max())
    reach = OFF_IMAGE_MARGIN * max(size, 1.0)
    outside = np.maximum(np.maximum(-points, points - [width - 1, height - 1]), 0).max(axis=1)
    far = np.flatnonzero(outside > reach)
    if far.size:
        k = int(far[np.argmax(outside[far])])
        x, y = points[k]
        raise DataError(path, f"point {k + 1} ({x:g}, {y:g}) lies {outside[k]:.0f} px outside the {width}x{height} "
                        "image (off the picture: annotation of another image?); skipped")


def _walk(root: Path, errors: list[DataError]) -> Iterator[tuple[Path, list[str]]]:
    """Each folder under ``root`` (sorted, hidden ones skipped, links followed once) and its files."""
    seen: set[str] = set()

    def unreadable(exc: OSError) -> None:
        errors.append(DataError(exc.filename, f"cannot read folder: {exc.strerror or exc}"))

    for folder, dirs, files in os.walk(root, onerror=unreadable, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield Path(folder), sorted(f for f in files if not f.startswith("."))


def _group_by_stem(names: list[str]) -> dict[str, dict[str, list[str]]]:
    """stem -> {"image": [...], ".pts": [...], ".mat": [...]} for the files of one folder."""
    groups: dict[str, dict[str, list[str]]] = {}
    for name in names:
        stem, suffix = os.path.splitext(name)
        suffix = suffix.lower()
        kind = "image" if suffix in IMAGE_EXTENSIONS else suffix
        if kind in ("image", *_ANNOTATIONS):
            groups.setdefault(stem, {"image": [], ".pts": [], ".mat": []})[kind].append(name)
    return groups


def _read_annotation(
    pts: Path | None, mat: Path | None, n_points: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Landmarks (from the .pts file if any, else the .mat file) and the .mat pose, if any."""
    mat_points, mat_pose = read_pose_mat(mat) if mat is not None else (None, None)
    if pts is not None:
        points = read_pts(pts, n_points)
        check_points(points, pts)
        return points, mat_pose
    assert mat is not None and mat_points is not None
    if n_points is not None and len(mat_points) != n_points:
        raise DataError(mat, f"has {len(mat_points)} points, expected {n_points}")
    check_points(mat_points, mat)
    return mat_points, mat_pose


@dataclass
class _PoseSource:
    """The pose.csv of one folder: its rows (None when absent or unreadable) and its path."""

    poses: dict[str, np.ndarray] | None
    path: Path | None

    @classmethod
    def for_folder(cls, folder: Path, names: list[str], errors: list[DataError]) -> _PoseSource:
        if POSE_CSV not in names:
            return cls(None, None)
        path = folder / POSE_CSV
        try:
            return cls(read_pose_csv(path), path)
        except DataError as exc:
            errors.append(DataError(path, f"{exc.problem} (no pose taken from this file)", exc.line))
            return cls(None, path)


def _build_face(
    key: str, image: Path, pts: Path | None, mat: Path | None, source: _PoseSource,
    n_points: int | None, errors: list[DataError],
) -> FaceRecord:
    """A record from its files; pose from the folder's pose.csv if it has one, else the .mat."""
    points, pose = _read_annotation(pts, mat, n_points)
    if source.poses is not None:
        if image.stem in source.poses:
            pose = source.poses[image.stem]
        else:
            kept = "face kept without pose" if pose is None else "pose taken from the .mat file"
            errors.append(DataNote(source.path, f"no pose row for {image.stem!r} ({kept})"))
    return FaceRecord(image=image, points=points, pose=pose, key=key)


def _pick_image(folder: Path, stem: str, files: dict[str, list[str]]) -> Path | None:
    """The one image of a stem; DataError when an annotation has none or several."""
    annotation = folder / (files[".pts"] or files[".mat"])[0]
    images = files["image"]
    if len(images) > 1:
        raise DataError(annotation, f"several images share its stem: {', '.join(images)}")
    if not images:
        if files[".pts"]:
            extensions = ", ".join(IMAGE_EXTENSIONS)
            raise DataError(annotation, f"no image beside it (expected {stem} + one of {extensions})")
        return None
    return folder / images[0]


def _load_folder_files(
    root: Path, folder: Path, names: list[str], n_points: int | None, errors: list[DataError]
) -> list[FaceRecord]:
    """Faces of one folder (not its subfolders); problems are appended to ``errors``."""
    groups = _group_by_stem(names)
    source = _PoseSource.for_folder(folder, names, errors)
    base = Path(os.path.abspath(root)).name
    faces = []
    for stem, files in sorted(groups.items()):
        if not files[".pts"] and not files[".mat"]:
            continue
        try:
            image = _pick_image(folder, stem, files)
            if image is None:
                continue
            key = f"{base}/{(folder / stem).relative_to(root).as_posix()}"
            pts = folder / files[".pts"][0] if files[".pts"] else None
            mat = folder / files[".mat"][0] if files[".mat"] else None
            faces.append(_build_face(key, image, pts, mat, source, n_points, errors))
        except DataError as exc:
            errors.append(exc)
    return faces


def _load_folder(root: Path, n_points: int | None) -> tuple[list[FaceRecord], list[DataError]]:
    """All faces under ``root`` (300W, 300W-LP or AFLW2000 layout), sorted by key."""
    faces: list[FaceRecord] = []
    errors: list[DataError] = []
    for folder, names in _walk(root, errors):
        faces.extend(_load_folder_files(root, folder, names, n_points, errors))
    faces.sort(key=lambda face: face.key)
    return faces, errors


def _load_list(path: Path, n_points: int | None) -> tuple[list[FaceRecord], list[DataError]]:
    """Faces of a WFLW list whose images exist."""

    faces, errors = parse_wflw_list(path, check_images=True)
    if n_points is not None and faces and faces[0].n_points != n_points:
        raise DataError(path, f"WFLW lists hold {faces[0].n_points} points, expected {n_points}")
    return faces, errors


def _load_single(path: Path, n_points: int | None) -> tuple[list[FaceRecord], list[DataError]]:
    """The face of one .pts or .mat file, with the same-stem image beside it."""
    folder = path.parent
    names = sorted(os.listdir(folder))
    files = _group_by_stem(names).get(path.stem, {"image": []})
    kind = path.suffix.lower()
    image = _pick_image(folder, path.stem, {"image": files["image"], ".pts": [path.name], ".mat": []})
    if image is None:
        raise DataError(path, "no image beside it")
    errors: list[DataError] = []
    source = _PoseSource.for_folder(folder, names, errors)
    pts, mat = (path, None) if kind == ".pts" else (None, path)
    key = f"{Path(os.path.abspath(folder)).name}/{path.stem}"
    return [_build_face(key, image, pts, mat, source, n_points, errors)], errors


def _nothing_loaded(path: Path, errors: list[DataError]) -> DataError:
    """The error raised when a source yields no usable face."""
    if len(errors) == 1 and not path.is_dir():
        return errors[0]
    if errors:
        return DataError(path, f"no usable faces ({len(errors)} errors; the first: {errors[0]})")
    return DataError(path, "no annotated faces (expected images with a same-stem .pts or .mat beside them)")


def load_faces(path: str | Path, n_points: int | None = None) -> tuple[list[FaceRecord], list[DataError]]:
    """Load annotated faces from a folder, a WFLW ``.txt`` list, or one ``.pts``/``.mat`` file.

    Returns the faces and the problems met on the way (malformed files are skipped, not fatal).
    Raises DataError when ``path`` does not exist, has an unsupported type, or yields no face.
    """
    source = Path(path)
    if not source.exists():
        raise DataError(source, "no such file or folder")
    suffix = source.suffix.lower()
    if source.is_dir():
        faces, errors = _load_folder(source, n_points)
    elif suffix == ".txt":
        faces, errors = _load_list(source, n_points)
    elif suffix in _ANNOTATIONS:
        faces, errors = _load_single(source, n_points)
    else:
        raise DataError(source, "unsupported source (expected a folder, a WFLW .txt list, a .pts or a .mat file)")
    if not faces:
        raise _nothing_loaded(source, errors)
    return faces, errors


def load_many(paths: list[str | Path], n_points: int | None = None) -> tuple[list[FaceRecord], list[DataError]]:
    """:func:`load_faces` over several sources (``--data`` repeated), in the order given."""
    records: list[FaceRecord] = []
    errors: list[DataError] = []
    for path in paths:
        recs, errs = load_faces(path, n_points=n_points)
        records += recs
        errors += errs
    return records, errors
