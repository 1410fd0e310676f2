"""Export a checkpoint to a model package: ONNX graph + model.json (+ slim weights.pt)."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..detection.calibration import Calibrations
from ..errors import DataError, ModelError
from ..fileio import check_writable_file, check_writable_folder, read_small_json, write_atomic
from ..formats import FaceRecord, load_many, read_image
from ..inference import DEFAULT_REFINE, quality_kind
from ..nn.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ..package import (
    SHIPPED_CALIBRATION_ORIGIN,
    SHIPPED_CALIBRATION_SOURCE,
    ModelInfo,
    read_model_json,
    shipped_calibrations_for,
    write_model_json,
)
from ..quality import MAX_FLAGGED, flag_threshold
from ..runtime import LandmarkModel, OnnxLandmarkModel

OPSET = 17
MAX_ABS_DIFF = 1e-4
CALIBRATION_FACES = 300  # training faces per detector when calibrations are fitted at export
# Quality thresholds (model.json quality_thresholds) are fitted as the shipped models' are
# (benchmarks/second_look.py --write-thresholds): each score kind a package without an error head
# gives, measured with the settings it is used with, on the run's validation faces (training faces
# score lower: the network has seen them), with the ground-truth box and the default detector.
THRESHOLD_SETTINGS = {  # kind -> (refine, straighten, flip_tta)
    "shape": (0, False, False), "flip": (0, False, True), "refine1": (1, True, False), "refine2": (2, True, False)}
THRESHOLD_FACES = (20, 1000)  # validation faces: fewer cannot place a 5 % threshold; more only cost time


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and checked."""

    onnx: Path  # the ONNX graph
    json: Path  # its model.json (or NAME.json beside NAME.onnx)
    weights: Path | None  # weights.pt of a package folder; None for a lone .onnx file
    onnx_bytes: int  # size of the ONNX file
    denormals_flushed: int  # subnormal weights set to zero before the export
    max_abs_diff: float  # largest ONNX Runtime vs PyTorch output difference on random pixels
    calibration_source: dict | None = None  # where the detector box calibrations came from
    quality_source: dict | None = None  # how the quality thresholds were fitted, or why there are none


def flush_denormals(model: torch.nn.Module) -> int:
    """Zero every subnormal float in the weights and buffers; returns how many were zeroed.

    Weights that decay towards zero end up subnormal, and this kind of CPU computes with them up
    to 20x slower; zeroing them changes no output measurably.
    """
    tiny = torch.finfo(torch.float32).tiny
    flushed = 0
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                mask = (t != 0) & (t.abs() < tiny)
                flushed += int(mask.sum())
                t[mask] = 0.0
    return flushed


def onnx_bytes(model: torch.nn.Module, input_size: int) -> bytes:
    """The model as an ONNX graph with a dynamic batch axis."""
    buf = io.BytesIO()
    dummy = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        # the grid head reads its map's side as a Python int on purpose: its cell centres become
        # constants of the graph (the input side is fixed per package)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model, (dummy,), buf, input_names=["image"], output_names=["landmarks", "pose"],
            dynamic_axes={"image": {0: "batch"}, "landmarks": {0: "batch"}, "pose": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    return buf.getvalue()


def check_onnx(onnx_path: Path, info: ModelInfo, model: torch.nn.Module, batch: int = 4) -> float:
    """Max abs difference between ONNX Runtime and PyTorch on random pixels; raises if too large."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(batch, 3, info.input_size, info.input_size)).astype(np.float32)
    with torch.inference_mode():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    session = OnnxLandmarkModel(onnx_path, info, threads=1)
    got = session._forward(x)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    if diff > MAX_ABS_DIFF:
        raise ModelError(onnx_path, f"ONNX output differs from PyTorch by {diff:.2e} (limit {MAX_ABS_DIFF:.0e})")
    return diff


def shipped_calibrations() -> dict[str, dict]:
    """Detector name -> calibration dict, from the calibrations shipped with asmnet."""
    from ..detection import load_calibrations

    return load_calibrations().to_json()


def _lowest_hashes(records: list[FaceRecord], count: int) -> list[FaceRecord]:
    """At most ``count`` records, the same ones on every run (those whose key hashes lowest)."""
    ranked = sorted(records, key=lambda r: hashlib.sha1(r.key.encode()).hexdigest())
    return ranked[:count]


def fit_calibrations(
    records: list[FaceRecord], detectors: dict | None = None, count: int = CALIBRATION_FACES
) -> tuple[dict[str, dict], dict[str, str]]:
    """Fit each detector's box calibration on up to ``count`` of ``records`` (training faces).

    ``detectors``: name -> FaceDetector (default: every built-in detector that works here without
    a model file of the user's). Returns (name -> calibration dict, name -> why it was not fitted).
    """
    from ..detection import available_detectors, fit_calibration, make_detector, match_detection

    if detectors is None:
        detectors = {name: make_detector(name) for name, state in available_detectors().items() if state == "ok"}
    faces = _lowest_hashes(records, count)
    images: dict[Path, np.ndarray | None] = {}
    fitted, skipped = {}, {}
    for name, detector in detectors.items():
        matched = []
        for face in faces:
            if face.image not in images:
                try:
                    images[face.image] = read_image(face.image)
                except DataError:
                    images[face.image] = None
            image = images[face.image]
            matched.append(None if image is None else match_detection(detector.detect(image), face.points))
        try:
            options = json.loads(json.dumps(detector.options(), default=str))  # as it reads back
            fitted[name] = {"detector": detector.name, "options": options,
                            "calibration": fit_calibration(matched, [f.points for f in faces]).to_dict()}
        except DataError as exc:
            skipped[name] = exc.problem
    return fitted, skipped


def training_faces(ckpt: dict, checkpoint: str | Path) -> tuple[list[FaceRecord], list[str]]:
    """The run's training faces (its data folders, less the validation keys of the run's
    split.json beside the checkpoint) and the data paths used; empty when the data is gone."""
    data = [d for d in (ckpt.get("train_config") or {}).get("data", []) if Path(d).exists()]
    if not data:
        return [], []
    records = load_many(data, n_points=int(ckpt["model_config"]["num_points"]))[0]
    split = Path(checkpoint).parent / "split.json"
    if split.exists():
        try:
            val = set(read_small_json(split, "split.json")["val_keys"])  # type: ignore[index]
        except (KeyError, TypeError):
            raise DataError(split, "not a split.json with val_keys") from None
        records = [r for r in records if r.key not in val]
    return records, data


def validation_faces(ckpt: dict, checkpoint: str | Path) -> tuple[list[FaceRecord], str]:
    """The run's validation faces (those of its data folders whose keys its split.json, beside
    the checkpoint, lists; at most ``THRESHOLD_FACES[1]``, the same ones every time) and where
    they come from, or ([], why there are none)."""
    data = [d for d in (ckpt.get("train_config") or {}).get("data", []) if Path(d).exists()]
    split = Path(checkpoint).parent / "split.json"
    if not data:
        return [], "the run's data folders are not there"
    if not split.is_file():
        return [], f"no split.json beside {checkpoint} names the run's validation faces"
    try:
        val = set(read_small_json(split, "split.json")["val_keys"])  # type: ignore[index]
    except (KeyError, TypeError):
        raise DataError(split, "not a split.json with val_keys") from None
    records = [r for r in load_many(data, n_points=int(ckpt["model_config"]["num_points"]))[0] if r.key in val]
    return _lowest_hashes(records, THRESHOLD_FACES[1]), f"the validation faces of {split}"


def fit_quality_thresholds(model: LandmarkModel, faces: list[FaceRecord], detector=None, batch: int = 32
                           ) -> tuple[dict[str, float], int]:
    """Each :data:`THRESHOLD_SETTINGS` kind's threshold (:func:`asmnet.quality.flag_threshold`:
    at most 5 % flagged) over ``faces`` aligned from their ground-truth box and, with
    ``detector``, from its calibrated detection too, as the shipped models' are. Returns
    (kind -> threshold, the number of boxes scored). Unreadable images are left out."""
    from ..evaluation import reference_box
    from ..inference import align_faces

    scores: dict[str, list[np.ndarray]] = {kind: [] for kind in THRESHOLD_SETTINGS}
    scored = 0
    for start in range(0, len(faces), batch):  # a batch of images at a time: memory stays small
        images, owner, boxes = [], [], []
        for face in faces[start:start + batch]:
            try:
                image = read_image(face.image)
            except DataError:
                continue
            images.append(image)
            for found in (reference_box(face, image, model), detector and reference_box(face, image, model, detector)):
                if found is not None:
                    owner.append(len(images) - 1)
                    boxes.append(found)
        if not boxes:
            continue
        scored += len(boxes)
        for kind, (refine, straighten, flip_tta) in THRESHOLD_SETTINGS.items():
            out = align_faces(model, images, np.array(owner), np.array(boxes), refine=refine, straighten=straighten,
                              flip_tta=flip_tta)
            scores[kind].append(out.scores[kind])
    if not scored:
        return {}, 0
    return {kind: round(flag_threshold(np.concatenate(parts)), 5) for kind, parts in scores.items()}, scored


def package_thresholds(model: LandmarkModel, faces: list[FaceRecord], where: str) -> tuple[dict[str, float], dict]:
    """The quality thresholds a package carries (:func:`fit_quality_thresholds` on ``faces``,
    with the default detector where the package has its calibration) and how they were made, or
    ({}, why there are none): its faces' ``flagged`` is then None."""
    low = THRESHOLD_FACES[0]
    if len(faces) < low:
        why = where if not faces else f"{len(faces)} validation faces ({where}), fewer than {low}"
        return {}, {"kind": "none", "why": why}
    from ..detection import make_detector

    detector = make_detector("auto")
    try:
        model.info.calibrations.for_detector(detector)
    except ModelError:
        detector = None
    thresholds, scored = fit_quality_thresholds(model, faces, detector)
    if not thresholds:
        return {}, {"kind": "none", "why": f"no image of {where} could be read"}
    boxes = "ground-truth box" + (f" and {detector.name}'s calibrated box" if detector else "")
    return thresholds, {"kind": "fitted", "thresholds": thresholds, "faces": len(faces), "boxes_scored": scored,
                        "boxes": boxes, "from": where,
                        "max_flagged": MAX_FLAGGED, "settings": {k: dict(zip(("refine", "straighten", "flip_tta"), v))
                                                                  for k, v in THRESHOLD_SETTINGS.items()}}


def package_calibrations(
    info: ModelInfo, faces: list[FaceRecord] | None, fit: bool = False, count: int = CALIBRATION_FACES,
    data: list[str] | None = None,
) -> tuple[dict[str, dict], dict]:
    """The detector calibrations a package of this model carries, and where they come from.

    The shipped ones when the model's reference box is theirs (68 points in the .pts convention)
    and ``fit`` is False; else fitted on ``faces`` (training faces). Raises ModelError when they
    must be fitted and there are no faces, or no detector found any of them."""
    shipped = None if fit else shipped_calibrations_for(info)  # the rule a checkpoint loaded as it is follows too
    if shipped is not None:
        return shipped.to_json(), {**SHIPPED_CALIBRATION_SOURCE, "detectors": sorted(shipped)}
    why = "asked (--fit-calibrations)" if fit else (
        f"the shipped calibrations are for 68 points with pixel origin {SHIPPED_CALIBRATION_ORIGIN:g}; this model has "
        f"{info.markup.n_points} points with origin {info.annotation_origin:g}")
    if not faces:
        raise ModelError(None, f"box calibrations must be fitted ({why}) but there are no training faces: "
                         "pass --calib-data with the training data")
    calibrations, skipped = fit_calibrations(faces, count=count)
    if not calibrations:
        raise ModelError(None, "no detector could be calibrated on the training faces ("
                         + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")")
    return calibrations, {"kind": "fitted", "why": why, "data": data or [], "faces": min(len(faces), count),
                          "detectors": sorted(calibrations), "not_fitted": skipped}


def export_model(
    checkpoint: str | Path, out: str | Path, name: str | None = None, extra: dict | None = None,
    calib_faces: list[FaceRecord] | None = None, fit_calibrations: bool = False,
    calib_count: int = CALIBRATION_FACES, calib_data: list[str] | None = None,
    threshold_faces: list[FaceRecord] | None = None,
) -> ExportResult:
    """Write ``out/`` (model.onnx, model.json, weights.pt) or ``out.onnx`` + ``out.json``.

    ``extra`` is merged into model.json (calibrations, quality threshold, card). Unless ``extra``
    gives them, the package gets detector box calibrations (:func:`package_calibrations`): the
    shipped ones, or fitted on ``calib_faces`` (default: the run's training faces, when its data
    is still there; ``calib_data`` names the folders given faces came from, for the card); and
    quality thresholds (:func:`package_thresholds`) fitted on ``threshold_faces`` (default: the
    run's validation faces, :func:`validation_faces`), or none, said in ``quality_source``.
    Returns an :class:`ExportResult`. Raises :class:`ModelError` when the
    checkpoint cannot be used, when calibrations must be fitted and cannot be, or when the ONNX
    graph's outputs differ from PyTorch's by more than ``MAX_ABS_DIFF``.
    """
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    info = ModelInfo.from_checkpoint(ckpt, checkpoint)
    out = Path(out)
    if out.suffix == ".onnx":  # before the calibrations are fitted and the graph exported
        check_writable_file(out)
    else:
        check_writable_folder(out)
    package_json = Path(checkpoint).with_name("model.json")
    if "label_origin" not in ckpt and package_json.exists():  # an older package's weights.pt: its model.json knows
        package = read_model_json(package_json)
        info.label_origin, info.annotation_origin = package.label_origin, package.annotation_origin
    calib_source = None
    if "calibrations" not in (extra or {}):  # decided before anything is written
        used = calib_data
        if calib_faces is None:
            calib_faces, used = training_faces(ckpt, checkpoint)
        calibrations, calib_source = package_calibrations(info, calib_faces, fit_calibrations, calib_count, used)
        info.calibrations = Calibrations.from_json(calibrations)
    flushed = flush_denormals(model)
    if out.suffix == ".onnx":
        onnx_path, json_path, weights_path = out, out.with_suffix(".json"), None
    else:
        onnx_path, json_path, weights_path = out / "model.onnx", out / "model.json", out / "weights.pt"
    info.name = name or (out.stem if out.suffix == ".onnx" else out.name)
    data = onnx_bytes(model, info.input_size)
    write_atomic(onnx_path, lambda p: p.write_bytes(data))
    diff = check_onnx(onnx_path, info, model)
    quality_source = None
    if not {"quality_threshold", "quality_thresholds"} & set(extra or {}):
        where = "the given faces"
        if threshold_faces is None:
            threshold_faces, where = validation_faces(ckpt, checkpoint)
        fitted_on = OnnxLandmarkModel(onnx_path, info)
        info.quality_thresholds, quality_source = package_thresholds(fitted_on, threshold_faces, where)
        info.quality_threshold = info.quality_thresholds.get(quality_kind(DEFAULT_REFINE, False))
    meta = info.to_json()
    for key, value in (extra or {}).items():
        meta[key] = value
    meta["card"] = {**info.card, **meta.get("card", {}), "denormals_flushed": flushed}
    if calib_source is not None:
        meta["calibration_source"] = calib_source
        meta["card"]["box_calibrations"] = calib_source
    if quality_source is not None:
        meta["quality_source"] = quality_source
        meta["card"]["quality_thresholds"] = quality_source
    write_model_json(json_path, meta)
    if weights_path is not None:
        slim = {k: ckpt[k] for k in ("model_config", "input_size", "crop_scale", "label_origin", "markup", "shape_model",
                                     "epoch", "best_nme", "train_config", "git_commit", "package_version") if k in ckpt}
        slim["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_checkpoint(weights_path, slim)
    return ExportResult(onnx=onnx_path, json=json_path, weights=weights_path, onnx_bytes=len(data),
                        denormals_flushed=flushed, max_abs_diff=diff, calibration_source=calib_source,
                        quality_source=quality_source)
