"""Aligned face crops: each face warped by a similarity (rotation, scale, shift) onto a template.

Templates (``FaceAligner.align(image, template=..., size=...)``, ``asmnet align --template``):

* ``"arcface"`` (default size 112): the 5-point template of ArcFace / InsightFace recognition
  models (eye centres, nose tip, mouth corners from the 68 points), fitted in least squares as
  InsightFace's ``norm_crop`` does; sizes that are multiples of 112 scale it, others follow
  InsightFace's 128-px rule (scaled from 128, shifted 8 px right).
* ``"ffhq"`` (default 256): the FFHQ dataset's crop (Karras et al. 2019): an oriented square
  from the eye and mouth centres, twice the eye distance or 1.8 x the eye-to-mouth distance, its
  centre 0.1 of the eye-to-mouth vector below the eyes; outside the picture it is mirrored
  (FFHQ also blurs that border, which is left out here).
* ``"dlib"`` (default 150, padding 0.2): like dlib's ``get_face_chip``: the 51 inner points (all
  but the jaw) fitted to a mean face in a unit square, padded by 0.2 of it on each side. The mean
  face is the model's own shape model mean (not dlib's table), so chips are alike, not identical.

Matrices map OpenCV pixel positions of the image (first pixel's centre at 0) to those of the crop:
``cv2.warpAffine(image, matrix, (size, size))`` makes the crop.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .geometry import similarity_transform, transform_points

if TYPE_CHECKING:
    from .predict import PredictOptions

TEMPLATES = ("arcface", "ffhq", "dlib")
DEFAULT_SIZES = {"arcface": 112, "ffhq": 256, "dlib": 150}
CROP_SIZES = (16, 4096)  # the crop sides (pixels) FaceAligner.align and asmnet align --size take
DLIB_PADDING = 0.2
# InsightFace's ArcFace template for 112 x 112 crops (pixel positions): the eye on the image's
# left, the other eye, the nose tip, the mouth corner on the image's left, the other corner.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]])
# per markup: the eyes (image left, right), nose tip, mouth corners (left, right), first non-jaw point
_PARTS = {
    68: (range(36, 42), range(42, 48), 30, 48, 54, 17),
    98: (range(60, 68), range(68, 76), 54, 76, 82, 33),
}


@dataclass
class AlignedFace:
    """One aligned crop: ``image`` (size, size, 3) in the channel order asked for (RGB unless
    ``channel_order="bgr"``), ``matrix`` the 2x3 warp from image to crop pixels (OpenCV's
    convention), ``landmarks`` the face's points in the crop (in the aligner's ``pixel_origin``),
    ``face`` the face in the picture, and the ``template`` used."""

    image: np.ndarray
    matrix: np.ndarray
    landmarks: np.ndarray
    face: Any
    template: str

    def __repr__(self) -> str:
        """One short line (the crop's pixels are in ``image``)."""
        side = self.image.shape[0] if getattr(self.image, "ndim", 0) >= 2 else "?"
        return f"AlignedFace({self.template!r}, {side}x{side} crop, face={self.face!r})"

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """JSON-ready: the face's record plus the matrix and the crop's landmarks."""
        return {**self.face.to_dict(decimals), "template": self.template, "size": int(self.image.shape[0]),
                "matrix": np.round(self.matrix, 6).tolist(),
                "crop_landmarks": np.round(self.landmarks, decimals).tolist()}


def check_template(template: Any, size: Any) -> int:
    """The crop side for ``template`` (``size`` or the template's default); SettingError (a
    DataError and a ValueError) for an unknown template or a size that is not a whole number in
    :data:`CROP_SIZES`."""
    from .errors import SettingError

    if not isinstance(template, str) or template not in TEMPLATES:
        raise SettingError(None, f"unknown template {template!r} (choose from: {', '.join(TEMPLATES)})")
    if size is None:
        return DEFAULT_SIZES[template]
    whole = isinstance(size, (int, np.integer)) or (isinstance(size, (float, np.floating)) and float(size).is_integer())
    low, high = CROP_SIZES
    if isinstance(size, bool) or not whole or not low <= size <= high:
        raise SettingError(None, f"crop size must be a whole number of pixels in {low}..{high}, got {size!r}")
    return int(size)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners (5, 2) of 68- or 98-point landmarks."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if len(pts) not in _PARTS:
        raise ValueError(f"aligned crops need 68 or 98 landmarks, got {len(pts)}")
    eye_l, eye_r, nose, mouth_l, mouth_r, _ = _PARTS[len(pts)]
    return np.stack([pts[list(eye_l)].mean(0), pts[list(eye_r)].mean(0), pts[nose], pts[mouth_l], pts[mouth_r]])


def dlib_template(mean_shape: np.ndarray) -> np.ndarray:
    """The inner points of a mean face (N, 2) moved into the unit square (aspect kept, centred)."""
    inner = np.asarray(mean_shape, dtype=np.float64)[_PARTS[len(mean_shape)][5]:]
    low, high = inner.min(0), inner.max(0)
    unit = (inner - low) / (high - low).max()
    return unit + (1.0 - (high - low) / (high - low).max()) / 2.0


def template_matrix(landmarks: np.ndarray, template: str, size: int, mean_shape: np.ndarray | None = None) -> np.ndarray:
    """The 2x3 matrix from image pixels (OpenCV's convention) to the ``size`` crop of ``template``
    for a face with these landmarks (OpenCV's convention). ``mean_shape`` (N, 2): the "dlib"
    template's mean face (the model's shape model mean)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if template == "arcface":
        ratio, shift = (size / 112.0, 0.0) if size % 112 == 0 else (size / 128.0, 8.0 * size / 128.0)
        return similarity_transform(five_points(pts), ARCFACE_112 * ratio + [shift, 0.0])
    if template == "ffhq":
        eye_l, eye_r, _, mouth_l, mouth_r = five_points(pts)
        eye_avg, mouth_avg = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
        eye_to_eye, eye_to_mouth = eye_r - eye_l, mouth_avg - eye_avg
        x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
        x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
        y = np.flipud(x) * [-1, 1]
        c = eye_avg + eye_to_mouth * 0.1
        quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # top-left, bottom-left, ...
        edges = np.array([[0, 0], [0, size], [size, size], [size, 0]], dtype=np.float64) - 0.5
        return similarity_transform(quad, edges)
    if template == "dlib":
        if mean_shape is None:
            raise ValueError("the dlib template needs the model's mean shape")
        unit = dlib_template(mean_shape)
        dst = (DLIB_PADDING + unit) / (2 * DLIB_PADDING + 1) * size - 0.5
        return similarity_transform(pts[_PARTS[len(pts)][5]:], dst)
    raise ValueError(f"unknown template {template!r} (choose from: {', '.join(TEMPLATES)})")


def aligned_crops(
    pixels: np.ndarray, faces: list, template: str, size: int, pixel_origin: float = 0.0,
    mean_shape: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(crop, matrix, landmarks in the crop) of each face, cropped from ``pixels`` as they are
    (any channel layout; the caller converts the crop). Landmarks in and out are in the
    ``pixel_origin`` convention; matrices in OpenCV's."""
    border = cv2.BORDER_REFLECT if template == "ffhq" else cv2.BORDER_CONSTANT
    out = []
    for face in faces:
        opencv = np.asarray(face.landmarks, dtype=np.float64) - pixel_origin
        matrix = template_matrix(opencv, template, size, mean_shape)
        crop = cv2.warpAffine(pixels, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
        out.append((crop, matrix, transform_points(opencv, matrix) + pixel_origin))
    return out


# -- files: ``asmnet align`` ------------------------------------------------------------------
def crop_paths(images: list[Path], inputs: list[str], out_dir: Path) -> dict[Path, Path]:
    """Each image's crop *base*: ``out_dir`` / its path relative to the folder holding all the
    inputs, name and extension kept (``a/x.jpg`` -> ``OUT/a/x.jpg``; crops add ``.faceK.png``),
    so two inputs never share a crop name."""
    bases = [os.path.abspath(i) if os.path.isdir(i) else os.path.dirname(os.path.abspath(i))
             for i in inputs if os.path.exists(i)]
    root = Path(os.path.commonpath(bases)) if bases else Path.cwd()
    return {p: out_dir / Path(os.path.abspath(p)).relative_to(root) for p in images}


@dataclass(frozen=True)
class CropSettings:
    """What ``asmnet align`` writes for each face, whichever engine runs it: the ``template``, the
    crop ``size`` in pixels, the file format ``fmt`` (``"png"`` or ``"jpg"``), and ``protected``:
    the resolved paths of the inputs a crop must never replace (see :func:`protected_inputs`)."""

    template: str
    size: int
    fmt: str = "png"
    protected: frozenset[str] = frozenset()
    skip_flagged: bool = False  # no crop for a face flagged as a likely failure (--skip-flagged)


def _crop_target(crop_file: Path) -> str:
    """The directory entry a crop replaces: its folder resolved, its own name kept (crops are
    written atomically, by a rename, so a link already there is replaced, never followed)."""
    return os.path.join(os.path.realpath(crop_file.parent), crop_file.name)


def protected_inputs(images: list[Path], fmt: str) -> frozenset[str]:
    """The resolved paths of the ``images`` that a crop could replace: only those named like a
    crop (``NAME.faceK.FMT``), so the set stays small for any job (it goes to every Ray actor)."""
    named = re.compile(rf".+\.face\d+\.{re.escape(fmt)}")
    return frozenset(real for real in map(os.path.realpath, images) if named.fullmatch(os.path.basename(real)))


def align_file(aligner: Any, path: str | Path, base: Path, template: str, size: int, fmt: str = "png",
               protected: frozenset[str] = frozenset(), skip_flagged: bool = False) -> dict:
    """Align the faces of one image file and write each crop as ``BASE.faceK.FMT`` (atomically);
    returns its record (:func:`asmnet.records.with_crops`: ``predict``'s record with the ``template``,
    ``size``, and each face's ``crop``, ``matrix`` and ``crop_landmarks``;
    with ``skip_flagged`` the flagged faces have neither crop nor record).
    Raises DataError for an unreadable image or a crop path that is one of the ``protected``
    (input) files, OSError when a crop cannot be written. :func:`align_task` wraps it for the
    engines of ``asmnet align``."""
    from .draw import write_image
    from .errors import DataError
    from .formats import read_image
    from .records import image_record, record_file, with_crops

    image = read_image(path)
    aligned = aligner.align(image, size=size, template=template, channel_order="bgr", skip_flagged=skip_flagged)
    crops = []
    for k, item in enumerate(aligned):
        crop_file = base.with_name(f"{base.name}.face{k}.{fmt}")
        if _crop_target(crop_file) in protected:
            raise DataError(crop_file, "a crop would overwrite an input: choose an --out folder outside the inputs")
        write_image(crop_file, item.image)
        placed = item.to_dict()
        crops.append({"crop": record_file(crop_file), "matrix": placed["matrix"],
                      "crop_landmarks": placed["crop_landmarks"]})
    record = image_record(path, None, (image.shape[1], image.shape[0]), [item.face for item in aligned],
                          aligner.model.info.name, aligner.pixel_origin)
    return with_crops(record, template, size, crops)  # predict's record, plus the crops


def align_task(aligner: Any, path: str, base: str | Path, crops: CropSettings) -> tuple[dict | None, str | None, str | None]:
    """One image of ``asmnet align``, the unit of work of every engine (this process, or a Ray
    actor: :class:`asmnet.ray_engine.AlignerActor` with ``crops``): align ``path`` and write its
    crops beside ``base`` (see :func:`align_file`). Returns (record, None, None) on success,
    (None, failure line, None) for a bad file or a crop that cannot be written, and (None, None,
    message) for a model or detector problem, which stops the job. Never raises for a bad file."""
    from .errors import AsmnetError, ModelError
    from .predict import one_line

    try:
        return (align_file(aligner, path, Path(base), crops.template, crops.size, crops.fmt, crops.protected,
                           crops.skip_flagged), None, None)
    except ModelError as exc:
        return None, None, str(exc)
    except AsmnetError as exc:
        text = str(exc)
        return None, (text if text.startswith(str(path)) or getattr(exc, "path", None) else f"{path}: {text}"), None
    except OSError as exc:
        return None, f"{base}: cannot write a crop ({exc.strerror or exc})", None
    except cv2.error as exc:
        return None, f"{path}: OpenCV failed ({one_line(exc)})", None
    except Exception as exc:  # noqa: BLE001 - one line per file; the job goes on
        return None, f"{path}: unexpected error ({one_line(exc)})", None


def align_inputs(inputs: list[str], out_dir: str | Path, aligner: Any = None, template: str = "arcface",
                 size: int | None = None, fmt: str = "png", json_path: str | Path | None = None,
                 options: PredictOptions | None = None, skip_flagged: bool = False) -> tuple[list[dict], list[str]]:
    """``asmnet align``: the images of ``inputs`` (files, folders searched recursively) aligned
    into ``out_dir`` (crops named after each input's path relative to the inputs' common folder,
    see :func:`crop_paths`) with a JSON Lines index at ``json_path`` (default OUT/aligned.jsonl),
    written by this process at the end, in the order of the inputs.

    The aligner is ``aligner``, or else the one of ``options`` (a :class:`asmnet.predict.PredictOptions`:
    its model and detector settings; default: the defaults). With ``options.engine == "ray"`` the
    images go to the actors of a Ray cluster (``options.ray``, see :mod:`asmnet.ray_engine`):
    each actor builds the aligner of ``options`` and writes the crops, and the records, crop
    files and failures are those of the local engine (``aligner`` must then be None).
    ``skip_flagged``: no crop (and no record) for faces flagged as likely failures.

    Returns (records, one line per failed input). Raises DataError when ``out_dir`` is an input
    folder or nothing can be read, ModelError for a model or detector problem (which would fail
    every image, or ``skip_flagged`` with a model without a quality threshold), AsmnetError for a
    Ray cluster that cannot run the job."""
    from tqdm import tqdm

    from .errors import AsmnetError, DataError, ModelError
    from .fileio import write_text_atomic
    from .predict import PredictOptions, _make_aligner, expand_inputs
    from .records import record_text

    options = options if options is not None else PredictOptions()
    ray = options.engine != "local"
    if ray:
        from .ray_engine import check_job

        if aligner is not None:
            raise AsmnetError("the Ray engine's actors build their aligners from the options: pass options, not an aligner")
        check_job(options, [], None)  # before any work: Ray installed, no --workers
    size = check_template(template, size)
    out_dir = Path(out_dir)
    out_real = os.path.realpath(out_dir)
    if any(os.path.isdir(i) and os.path.realpath(i) == out_real for i in inputs):
        raise DataError(out_dir, "is an input folder: choose an --out folder outside the inputs")
    images, videos, failures = expand_inputs(inputs)
    # crops of an earlier run inside an input folder are outputs, not inputs
    images = [p for p in images if not os.path.realpath(p).startswith(out_real.rstrip(os.sep) + os.sep)]
    failures += [f"{v}: a video (asmnet align takes images; asmnet predict tracks videos)" for v in videos]
    if not images:
        raise DataError(None, "no images found in the inputs" + (f" ({failures[0]})" if failures else ""))
    crops = CropSettings(template, size, fmt, protected_inputs(images, fmt), bool(skip_flagged))
    plan = crop_paths(images, inputs, out_dir)
    tasks = [(str(p), str(plan[p])) for p in images]
    if aligner is None:
        # the local engine's aligner; for Ray, built here once too, so that a bad model or
        # detector fails in one line before any cluster starts
        aligner = _make_aligner(options, default_threads=None)
    if skip_flagged and aligner.quality_threshold is None:  # every image would fail the same way
        raise ModelError(None, f"--skip-flagged needs a quality threshold; model {aligner.model.info.name!r} has none "
                         f"for its {aligner.quality_kind!r} score")
    if ray:
        from .ray_engine import run_tasks

        del aligner
        results = run_tasks(tasks, options, crops=crops)
    else:
        results = ((i, *align_task(aligner, path, base, crops)) for i, (path, base) in enumerate(tasks))
    answers: dict[int, tuple[dict | None, str | None]] = {}
    bar = tqdm(total=len(tasks), desc="align", unit="img", file=sys.stderr, disable=None)
    try:
        for index, record, error, fatal in results:
            if fatal:
                raise ModelError(None, fatal)
            answers.setdefault(index, (record, error))
            bar.update(1)
    finally:
        bar.close()
        results.close()  # stops the Ray job (and a local Ray instance it started) on an error too
    records = []
    for index in range(len(tasks)):  # the inputs' order, whichever order the answers came in
        record, error = answers[index]
        if error:
            failures.append(error)
        else:
            records.append(record)
    index_file = Path(json_path) if json_path else out_dir / "aligned.jsonl"
    write_text_atomic(index_file, "".join(record_text(r) + "\n" for r in records))
    return records, failures
