"""``asmnet evaluate``: NME, failure rate, CED/AUC and pose MAE on annotated faces.

Default protocol (as in published tables): the face box is the tight box of the ground-truth
points, cropped exactly as in training. With a detector, each image is searched, the detection
overlapping the ground truth is calibrated to the model's box convention, and misses are counted.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .errors import DataError
from .fileio import read_small_json, read_small_text
from .formats import FaceRecord, key_folder, read_image
from .formats.faces import check_on_image
from .formats.image import max_pixels_limit
from .formats.wflw import WFLW_ATTRIBUTES
from .geometry import crop_matrix, tight_box
from .inference import align_faces, box_frames
from .metrics import nme as nme_percent
from .metrics import normalising_distance, summarize
from .regions import RegionRefiner
from .runtime import LandmarkModel


@dataclass
class ImageResult:
    """One evaluated face: its key, NME (percent), quality score (the kind the settings give:
    :func:`asmnet.inference.model_quality_kind`, e.g. the estimated NME of the learned score) and
    the predicted points (N x [x, y], in the annotations' pixel convention)."""

    image: str
    nme: float
    quality: float
    landmarks: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True)
class TrainingFaces:
    """What a model records of the faces it was trained on: the names of its training data
    folders, and its held-out validation keys (None when it records none), read from ``held_out_file``."""

    model: str
    folders: tuple[str, ...]
    held_out: frozenset[str] | None = None
    held_out_file: str | None = None

    def trained_on(self, key: str) -> bool:
        """Whether the face ``key`` (``folder/...``) is one the model trained on, as far as it records."""
        return key_folder(key) in self.folders and (self.held_out is None or key not in self.held_out)


@dataclass
class FolderResult:
    """The faces of one data folder: how many, mean and median NME (percent)."""

    n: int
    nme_mean: float
    nme_median: float


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured. Percentages are in percent (NME, FR, miss rate); AUCs are
    fractions. ``to_dict()`` is the ``asmnet evaluate --json`` document (keys ``fr_0.08``, ...)."""

    model: str
    norm: str
    n: int  # faces evaluated
    nme_mean: float
    nme_median: float
    fr_8: float  # failure rate: faces with NME above 8 %
    fr_10: float
    auc_8: float  # area under the CED up to 8 %, divided by 8 %
    auc_10: float
    pose_mae: dict[str, float] | None  # yaw/pitch/roll in degrees, over the faces with pose labels
    pose_n: int
    per_image: list[ImageResult]
    per_folder: dict[str, FolderResult]  # per --data folder (a key's first part)
    per_subfolder: dict[str, FolderResult] = field(default_factory=dict)  # per folder holding the images
    per_attribute: dict[str, float] | None = None  # WFLW attribute -> mean NME
    missed: list[str] = field(default_factory=list)  # keys of faces the detector did not find
    miss_rate: float = 0.0  # percent of the readable faces
    unreadable: list[str] = field(default_factory=list)  # one line per face that could not be evaluated
    annotation_errors: list[str] = field(default_factory=list)  # one line per unusable annotation file
    annotation_notes: list[str] = field(default_factory=list)  # faces kept with a note (no pose row)
    annotation_origin: float | None = None  # the pixel convention points were compared in (iBUG .pts: 1)
    training_faces: list[str] = field(default_factory=list)  # keys of evaluated faces the model trained on

    @property
    def detector_misses(self) -> int:
        return len(self.missed)

    @property
    def nmes(self) -> np.ndarray:
        """Every face's NME (percent), in evaluation order."""
        return np.array([item.nme for item in self.per_image])

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``asmnet evaluate --json`` (plain Python numbers)."""
        out: dict[str, Any] = {
            "n": self.n, "nme_mean": self.nme_mean, "nme_median": self.nme_median,
            "fr_0.08": self.fr_8, "fr_0.10": self.fr_10, "auc_0.08": self.auc_8, "auc_0.10": self.auc_10,
            "pose_mae": self.pose_mae, "pose_n": self.pose_n,
            "per_image": [vars(item).copy() for item in self.per_image],
            "norm": self.norm,
            "per_folder": {name: vars(folder).copy() for name, folder in self.per_folder.items()},
            "per_subfolder": {name: vars(folder).copy() for name, folder in self.per_subfolder.items()},
        }
        if self.per_attribute is not None:
            out["per_attribute"] = self.per_attribute
        out.update({"detector_misses": self.detector_misses, "miss_rate": self.miss_rate, "missed": self.missed,
                    "unreadable": self.unreadable, "model": self.model,
                    "annotation_errors": self.annotation_errors, "annotation_notes": self.annotation_notes,
                    "annotation_origin": self.annotation_origin, "training_faces": self.training_faces})
        return out


def read_keys(path: str | Path) -> set[str]:
    """Face keys from a run's split.json (its validation keys) or a text file, one key per line."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            keys = read_small_json(path, "key list")["val_keys"]  # type: ignore[index]
        except (KeyError, TypeError):
            raise DataError(path, "not a split.json with val_keys") from None
        return set(keys)
    text = read_small_text(path, "key list")
    return {line.strip() for line in text.splitlines() if line.strip()}


def key_subfolder(key: str) -> str:
    """The folder holding a face's image, as its key names it (``300w/test/helen/x`` -> ``300w/test/helen``)."""
    return key.rsplit("/", 1)[0] if "/" in key else key


def recorded_training_faces(model_path: str | Path, info: Any) -> TrainingFaces | None:
    """What the model at ``model_path`` (a package folder, .onnx or .pt; ``info`` its ModelInfo)
    records of its training faces, or None when it names no training data: the data folders of
    its card (every training stage's) and the validation keys of the package's ``val_keys.txt``,
    or of the run's ``split.json`` (beside a checkpoint, or in the run folder its card names)."""
    card = info.card or {}
    training = card.get("training") or {}
    configs = [training.get("config"), *(stage.get("config") for stage in training.get("earlier_stages") or []),
               card.get("train_config")]
    configs = [c for c in configs if isinstance(c, dict)]
    folders = sorted({Path(str(d)).name for c in configs for d in c.get("data") or [] if str(d).strip()})
    if not folders:
        return None
    path = Path(model_path)
    package = path if path.is_dir() else path.parent
    candidates = [package / "val_keys.txt", package / "split.json",
                  *(Path(str(c["out"])) / "split.json" for c in configs if c.get("out"))]
    for keys_file in candidates:
        if keys_file.is_file():
            try:
                held_out = frozenset(read_keys(keys_file))
            except DataError:
                continue  # not a key list after all: look further
            return TrainingFaces(info.name, tuple(folders), held_out, str(keys_file))
    return TrainingFaces(info.name, tuple(folders))


def training_note(res: EvaluationResult, training: TrainingFaces) -> str | None:
    """One line saying how many of the evaluated faces the model trained on, and how to score
    only its validation faces; None when it trained on none of them."""
    if not res.training_faces:
        return None
    folders = sorted({key_folder(k) for k in res.training_faces})
    text = (f"{len(res.training_faces)} of the {res.n} faces scored are faces model {training.model} was trained on "
            f"({', '.join(folders)}")
    if training.held_out_file is None:
        return text + ", and it records no validation split): these numbers flatter it"
    keys = os.path.relpath(training.held_out_file)
    keys = training.held_out_file if keys.startswith(os.pardir) else keys
    return (text + f", less its validation faces): these numbers flatter it; --keys {keys} scores only its "
            "validation faces")


def reference_box(record: FaceRecord, image: np.ndarray, model: LandmarkModel, detector=None) -> np.ndarray | None:
    """The box the model crops: the GT tight box, or the calibrated matching detection (None = miss)."""
    if detector is None:
        return tight_box(record.points)
    from .detection import match_detection, to_reference_box

    det = match_detection(detector.detect(image), record.points)
    if det is None:
        return None
    return to_reference_box(det.box, model.info.calibrations.for_detector(detector, model.info.name))


def evaluate(
    model: LandmarkModel,
    records: list[FaceRecord],
    norm: str = "inter-ocular",
    detector=None,
    batch_size: int = 32,
    asm_blend: float = 0.0,
    progress: bool = True,
    flip_tta: bool = False,
    annotation_origin: float | None = None,
    keep_off_image: bool = False,
    refine: int = 0,
    straighten: bool = False,
    early_stop: tuple[float, float] | None = None,
    training: TrainingFaces | None = None,
    refiner: RegionRefiner | None = None,
) -> EvaluationResult:
    """Evaluate ``model`` on annotated faces; returns an :class:`EvaluationResult`.

    ``detector=None`` crops the tight box of the ground-truth points (the published protocol);
    with a detector, each image's matching detection is calibrated to the model's box convention
    and misses are counted. Faces that cannot be evaluated (unreadable image, undefined NME,
    unusable box, annotation lying off its image unless ``keep_off_image``) are listed in
    ``unreadable``. ``refiner`` (:func:`asmnet.regions.load_refiner`) moves each face part last, as
    ``FaceAligner(refine_regions=True)`` does. Predictions are compared with the annotations in
    the annotations' pixel convention: ``annotation_origin`` is the first pixel's centre in the
    records' points (iBUG .pts: 1), by default the convention of the model's own training data
    (``info.annotation_origin``). Raises :class:`ModelError` when the model has no
    box calibration for the detector or outputs NaN, and :class:`DataError` when no face at all
    could be evaluated or ``$ASMNET_MAX_PIXELS`` is malformed. ``refine`` / ``straighten`` /
    ``early_stop``: the second look (:func:`asmnet.inference.align_faces`); the published protocol
    is one pass. ``training`` (:func:`recorded_training_faces`): the evaluated faces the model
    trained on are listed in ``training_faces``.
    """
    # records' convention -> the model's: boxes go in shifted by -shift, predictions come back +shift
    shift = 0.0 if annotation_origin is None else float(annotation_origin) - model.info.annotation_origin
    kept, preds, poses, quality, failures, misses = [], [], [], [], [], []
    pending: list[tuple[FaceRecord, np.ndarray, np.ndarray]] = []
    # settings that would fail every face fail once, here
    max_pixels_limit()
    if detector is not None:
        model.info.calibrations.for_detector(detector, model.info.name)  # ModelError when it has none

    def flush() -> None:
        if not pending:
            return
        out = align_faces(model, [image for _, image, _ in pending], np.arange(len(pending)),
                          np.stack([box for _, _, box in pending]), refine=refine, straighten=straighten,
                          batch_size=batch_size, asm_blend=asm_blend, flip_tta=flip_tta, early_stop=early_stop)
        points = out.landmarks
        if refiner is not None:
            points = refiner.refine([image for _, image, _ in pending], np.arange(len(pending)), points,
                                    model.info.label_origin)
        preds.extend(points + shift)
        poses.extend(out.pose)
        quality.extend(out.quality)
        kept.extend(r for r, _, _ in pending)
        pending.clear()

    usable, unusable = split_by_normaliser(records, model, norm)
    failures += unusable
    for rec in tqdm(usable, desc="evaluate", disable=not progress or None, file=sys.stderr, leave=False):
        try:
            image = read_image(rec.image)
            if not keep_off_image:  # an annotation off its picture would count as a failure of the model
                check_on_image(rec.points, image.shape[1], image.shape[0], rec.image)
            box = reference_box(rec, image, model, detector)
            if box is None:
                misses.append(rec.key)
                continue
            if detector is None:
                box = box - shift
            center, side = box_frames(box[None], model.info)
            crop_matrix(center[0], side[0], model.info.input_size)  # a box the crop cannot use fails here
        except DataError as exc:
            failures.append(str(exc) if exc.path is not None else f"{rec.image}: {exc}")
            continue
        except ValueError as exc:  # a face box the crop cannot use (degenerate or non-finite)
            failures.append(f"{rec.image}: cannot crop the face ({exc})")
            continue
        pending.append((rec, image, box))
        if len(pending) >= batch_size:
            flush()
    flush()
    if not kept:
        raise DataError(None, "no face could be evaluated" + (f" ({failures[0]})" if failures else ""))
    out = summarize_results(model, kept, np.stack(preds), np.stack(poses), np.array(quality), norm,
                            failures, misses, len(records))
    out.annotation_origin = model.info.annotation_origin + shift
    if training is not None:
        out.training_faces = [r.key for r in kept if training.trained_on(r.key)]
    return out


def _folder_results(nmes_by_folder: dict[str, list[float]]) -> dict[str, FolderResult]:
    return {f: FolderResult(len(v), float(np.mean(v)), float(np.median(v))) for f, v in sorted(nmes_by_folder.items())}


def split_by_normaliser(
    records: list[FaceRecord], model: LandmarkModel, norm: str
) -> tuple[list[FaceRecord], list[str]]:
    """The records with a positive ``norm`` distance, and one line for each of the others."""
    usable, unusable = [], []
    for rec in records:
        if rec.n_points != model.info.markup.n_points:
            unusable.append(f"{rec.image}: its annotation has {rec.n_points} points, the model "
                            f"{model.info.markup.n_points}")
            continue
        distance = normalising_distance(rec.points, model.info.markup, norm)[0]
        if distance > 0 and np.isfinite(distance):
            usable.append(rec)
        else:
            unusable.append(f"{rec.image}: the {norm} normalising distance of its annotation is {distance:g}, "
                            "so its NME is undefined")
    return usable, unusable


def summarize_results(
    model: LandmarkModel, kept: list[FaceRecord], preds: np.ndarray, poses: np.ndarray, quality: np.ndarray,
    norm: str, failures: list[str], misses: list[str], n_total: int,
) -> EvaluationResult:
    """The :class:`EvaluationResult` of predictions ``preds`` (F, N, 2) and ``poses`` (F, 3) for
    the evaluated records ``kept``."""
    gts = np.stack([r.points for r in kept])
    nmes = nme_percent(preds, gts, model.info.markup, norm)
    gt_pose = np.stack([r.pose if r.pose is not None else np.full(3, np.nan) for r in kept])
    has_pose = not np.isnan(gt_pose).all()
    summary = summarize(nmes, [r.key for r in kept], poses if has_pose else None, gt_pose if has_pose else None)
    folders, subfolders = defaultdict(list), defaultdict(list)
    for r, e in zip(kept, nmes):
        folders[key_folder(r.key)].append(e)
        subfolders[key_subfolder(r.key)].append(e)
    per_attribute = None
    if any(r.attributes for r in kept):
        per_attribute = {
            a: float(np.mean([e for r, e in zip(kept, nmes) if r.attributes.get(a)]))
            for a in WFLW_ATTRIBUTES if any(r.attributes.get(a) for r in kept)
        }
    return EvaluationResult(
        model=model.info.name, norm=norm, n=summary["n"], nme_mean=summary["nme_mean"],
        nme_median=summary["nme_median"], fr_8=summary["fr_0.08"], fr_10=summary["fr_0.10"],
        auc_8=summary["auc_0.08"], auc_10=summary["auc_0.10"], pose_mae=summary["pose_mae"],
        pose_n=summary["pose_n"],
        per_image=[ImageResult(item["image"], item["nme"], float(q), np.round(p, 2).tolist())
                   for item, q, p in zip(summary["per_image"], quality, preds)],
        per_folder=_folder_results(folders), per_subfolder=_folder_results(subfolders),
        per_attribute=per_attribute, missed=list(misses),
        miss_rate=100.0 * len(misses) / max(1, n_total - len(failures)), unreadable=list(failures),
    )
