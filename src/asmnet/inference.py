"""From face boxes to landmarks and pose in image coordinates (NumPy + OpenCV, no torch).

The pipeline per face: a first crop from the face box (a detector's calibrated box or a user's
reference box), the network, then optionally the *second look*: ``refine`` more passes, each
cropping again from the previous prediction exactly as training cropped from the ground truth
(centre and side of the points' tight box), and with ``straighten`` rotated so that the face is
upright in the crop (the rotation that best aligns the prediction with the shape model's mean).
Every pass maps its prediction back through the inverse of its own crop matrix, so points and
pose always come out in the image frame. All faces go through the network together, pass by pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .formats import to_rgb
from .geometry import crop_matrix, from_normalised, invert_affine, transform_points, warp
from .pose import rotate_pose_in_image
from .quality import LEARNED_KINDS, learned_kind
from .runtime import LandmarkModel, ModelInfo

# the scores that need no error head, then the learned ones (asmnet.quality)
MOVE_KINDS = ("refine1", "refine2", "flip", "shape")
QUALITY_KINDS = MOVE_KINDS + LEARNED_KINDS
# second-look passes by default (FaceAligner, asmnet predict): see benchmarks/README.md "Second look"
DEFAULT_REFINE = 2
# The second look stops after one re-crop for a face it moved by at most 3 % of the eye distance
# and turned by at most 10 degrees; that face's result is the mean of its first pass and the
# re-crop (benchmarks/README.md "Second look": with MTCNN on the validation split 4.20 % NME at
# 0 degrees, 4.22 at 15, 4.26 at 30 against 4.24 / 4.23 / 4.27 for three passes every time, and
# 82 % of upright faces need only two)
EARLY_STOP = (3.0, 10.0)
# The second look's result averages the first pass with the re-crops when the first re-crop moved
# the face's points by at most 6 % of the eye distance and turned its crop by at most 20 degrees:
# a different crop of the same face is a better ensemble member than one more look-alike re-crop;
# beyond that the first crop was wrong (rotated faces, misplaced boxes) and would pull the mean
# off. MTCNN on the validation split, default (early stop): 4.211 -> 4.201 % NME at 0 degrees,
# 4.223 -> 4.217 at 15, 4.265 -> 4.263 at 30, unchanged at 45 (benchmarks/README.md "Second look")
FIRST_PASS_JOINS = (6.0, 20.0)
# Off by default: the first re-crop can run on the mirrored crop (its points mirrored back), so
# that the second look's mean averages two views whose mistakes differ, as flip TTA does, at no
# extra pass. MTCNN on the validation split, default second look: 4.132 -> 4.100 % NME at 0 degrees,
# 4.142 -> 4.118 at 15, 4.227 -> 4.230 at 30, 4.566 -> 4.578 at 45 (ground-truth box 3.971 ->
# 3.951). But the move between a plain and a mirrored pass carries the flip disagreement too, and
# the quality score ranks failures worse: learned2 ROC AUC 0.948 -> 0.917 and 11 -> 8 failures
# caught, even with the score refitted (benchmarks/README.md "Second look", setting
# refine2_early_mirror). Under flip TTA every pass sees both views already.
MIRROR_FIRST_RECROP = False
# what Face.quality means at the default settings with the default model (model cards say it)
QUALITY_DEFINITION = ("estimated NME % (learned2; learned1 for a face whose second look stopped after one re-crop): "
                      "exp(a + b e + c ln(m + 0.05)), e = the error head's ln-NME estimate averaged over the "
                      "second-look passes (the first pass and the re-crop where it stopped), m = the last pass's "
                      "mean point move in % of the predicted "
                      "inter-ocular distance; a, b, c fitted on perturbed training faces (scripts/fit_quality.py; "
                      f"GT-box start here, {DEFAULT_REFINE} straightened second-look passes with early stop; "
                      "benchmarks/second_look.py measures more)")


def quality_kind(refine: int, flip_tta: bool, learned: bool = False) -> str:
    """The failure score that alignments with these settings carry (see :class:`Alignment`).

    ``learned`` (the model has an error head and coefficients for the kind): ``"learned0"`` /
    ``"learned1"`` / ``"learned2"`` by ``refine`` (2 stands for 2 or more passes). Otherwise
    ``"refine1"`` / ``"refine2"``, else ``"flip"`` under ``flip_tta``, else ``"shape"``. Each
    kind has its own threshold in model.json."""
    if learned:
        return learned_kind(refine)
    if refine >= 1:
        return "refine1" if refine == 1 else "refine2"
    return "flip" if flip_tta else "shape"


def model_quality_kind(model: LandmarkModel, refine: int, flip_tta: bool) -> str:
    """:func:`quality_kind` for this loaded model: learned when its graph has the error head and
    its model.json the coefficients for these settings."""
    qm = model.info.quality_model
    return quality_kind(refine, flip_tta, bool(model.has_error and qm is not None and learned_kind(refine) in qm.kinds))


@dataclass
class Alignment:
    """Landmarks and pose of K faces, with the scores the quality flag is built from.

    ``landmarks`` (K, N, 2) image pixels in the annotation files' convention (``info.label_origin``);
    ``pose`` (K, 3) yaw, pitch, roll in degrees in the image frame. ``quality`` (K,) is the
    failure score of kind ``quality_kind`` (:func:`model_quality_kind`), in percent of the
    predicted inter-ocular distance, like an NME (larger = more likely wrong). With the error
    head (``learned*``, :mod:`asmnet.quality`) it is the estimated NME: the head's estimate,
    averaged over the passes that make the result, combined with the last pass's move. Without
    it: with a second look, how far the last pass moved the points (a face the network reads the
    same way from two crops is stable; a non-face, a turned face or a misplaced box is not);
    without one, the distance between the prediction and the un-mirrored prediction of the
    mirrored crop (``flip_tta``), else between the prediction and its shape-model projection.
    ``scores``: every kind these settings give (the move kind always, the learned one with the
    error head), ``quality`` being ``scores[quality_kind]``. The parts, in normalised crop units
    (fractions of the crop side): ``asm_distance``, ``pass_shift`` (None without a second look)
    and ``flip_gap`` (None without ``flip_tta``); ``error`` (K,): the error head's ln(NME %)
    estimate averaged over those passes (None without the head). ``angles`` (K,): the last
    crop's rotation in degrees (counter-clockwise as displayed); ``matrices`` (K, 2, 3): the
    last image->crop matrices (0-based pixels); ``passes`` (K,): network passes each face took
    (fewer than ``refine`` + 1 where the second look stopped early).
    """

    landmarks: np.ndarray
    pose: np.ndarray
    quality: np.ndarray
    quality_kind: str
    asm_distance: np.ndarray
    pass_shift: np.ndarray | None
    flip_gap: np.ndarray | None
    angles: np.ndarray
    matrices: np.ndarray
    error: np.ndarray | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    passes: np.ndarray | None = None

    def __iter__(self):
        """Unpacks as ``landmarks, pose, quality`` (what align_boxes returned before)."""
        return iter((self.landmarks, self.pose, self.quality))

    def __getitem__(self, index: int) -> np.ndarray:
        return (self.landmarks, self.pose, self.quality)[index]


def crop_faces(
    image: np.ndarray, boxes: np.ndarray, info: ModelInfo, channel_order: str = "bgr"
) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 crops (K, S, S, 3) of reference boxes (K, 4) and their image->crop matrices.

    ``image``: BGR uint8, or any :func:`asmnet.formats.image_pixels` array (gray, RGB, RGBA) with
    its ``channel_order``; only the crops are converted to RGB, never the whole picture.
    Boxes are in the annotation files' pixel convention; the crops are taken in OpenCV's 0-based
    frame (the box is shifted by ``info.label_origin``), exactly as in training."""
    centers, sides = box_frames(boxes, info)
    matrices = np.stack([crop_matrix(c, s, info.input_size) for c, s in zip(centers, sides)]).reshape(-1, 2, 3)
    return warp_crops([image], np.zeros(len(matrices), int), matrices, info.input_size, channel_order), matrices


def box_frames(boxes: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """Crop centres (K, 2) in 0-based pixels and crop sides (K,) of reference boxes (K, 4)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - info.label_origin
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return centers, info.crop_scale * sizes


def warp_crops(images: Sequence[np.ndarray], owner: np.ndarray, matrices: np.ndarray, size: int,
               channel_order: str = "bgr") -> np.ndarray:
    """RGB crops (K, S, S, 3): crop k warped from ``images[owner[k]]`` (pixels in ``channel_order``,
    see :func:`crop_faces`) with ``matrices[k]``."""
    if len(matrices) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([to_rgb(warp(images[o], m, size), channel_order) for o, m in zip(owner, matrices)])


def shape_roll(points: np.ndarray, mean_shape: np.ndarray) -> np.ndarray:
    """In-plane rotation (K,) in degrees of each shape (K, N, 2) against ``mean_shape`` (N, 2).

    The least-squares similarity fit points ~ s R(a) mean + t (Procrustes); a > 0 is a clockwise
    tilt as displayed (y points down), the angle :func:`asmnet.geometry.crop_matrix` undoes."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(mean_shape, dtype=np.float64)
    zp = (p[..., 0] - p[..., 0].mean(-1, keepdims=True)) + 1j * (p[..., 1] - p[..., 1].mean(-1, keepdims=True))
    zm = (m[:, 0] - m[:, 0].mean()) + 1j * (m[:, 1] - m[:, 1].mean())
    return np.rad2deg(np.angle((np.conj(zm) * zp).sum(-1)))


def point_frames(points: np.ndarray, crop_scale: float, angles: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Crop centres (K, 2) and sides (K,) from points (K, N, 2), as training crops from labels.

    Without ``angles`` this is the points' tight box (centre, ``crop_scale`` x its larger side).
    With them, the tight box is taken in the frame turned by each angle, i.e. the box of the
    face once straightened, and its centre is mapped back to the image."""
    p = np.asarray(points, dtype=np.float64)
    if angles is None:
        lo, hi = p.min(1), p.max(1)
        return (lo + hi) / 2.0, crop_scale * (hi - lo).max(-1)
    a = np.deg2rad(np.asarray(angles, dtype=np.float64))
    rot = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], -2)  # R(a)
    c0 = p.mean(1, keepdims=True)
    upright = np.einsum("kni,kij->knj", p - c0, rot)  # row vectors: q = R(-a) (p - c0)
    lo, hi = upright.min(1), upright.max(1)
    center = c0[:, 0] + np.einsum("kij,kj->ki", rot, (lo + hi) / 2.0)
    return center, crop_scale * (hi - lo).max(-1)


def run_batches(model: LandmarkModel, crops: np.ndarray, batch_size: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Network units (K, N, 2), pose (K, 3) and the error head's output (K,) (None without one),
    ``batch_size`` crops per call."""
    units, poses, errors = [], [], []
    for i in range(0, len(crops), batch_size):
        u, p, e = model.predict(crops[i : i + batch_size])
        units.append(u)
        poses.append(p)
        errors.append(e)
    error = None if not errors or errors[0] is None else np.concatenate(errors)
    return np.concatenate(units), np.concatenate(poses), error


def _network(model: LandmarkModel, crops: np.ndarray, batch_size: int, flip_tta: bool, mirror: bool = False
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Units (K, N, 2), crop-frame pose (K, 3), the flip gap (K,) (None without ``flip_tta``) and
    the error head's output (K,) (None without one; under ``flip_tta`` the mean of both crops').
    ``mirror`` (without ``flip_tta``): run the mirrored crops instead, results mirrored back."""
    if not flip_tta:
        if not mirror:
            units, pose, error = run_batches(model, crops, batch_size)
            return units, pose, None, error
        units, pose, error = run_batches(model, np.ascontiguousarray(crops[:, :, ::-1]), batch_size)
        units, pose = _unmirror(model, units, pose)
        return units, pose, None, error
    # the crops and their mirrors in the same batches
    units, pose, error = run_batches(model, np.concatenate([crops, crops[:, :, ::-1]]), 2 * batch_size)
    (units, units_f), (pose, pose_f) = np.split(units, 2), np.split(pose, 2)
    units_f, pose_f = _unmirror(model, units_f, pose_f)
    gap = np.linalg.norm(units - units_f, axis=-1).mean(-1)
    error = None if error is None else np.mean(np.split(error, 2), axis=0)
    return (units + units_f) / 2.0, (pose + pose_f) / 2.0, gap, error


def _unmirror(model: LandmarkModel, units: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Units and pose of mirrored crops, in the frame of the crops they mirror: x -> -x (edges at
    +-0.5), points re-ordered by the flip table; a mirrored face's pose is (-yaw, pitch, -roll)."""
    return units[:, model.info.markup.flip_array()] * [-1.0, 1.0], pose * [-1.0, 1.0, -1.0]


def predict_crops(
    model: LandmarkModel, crops: np.ndarray, batch_size: int = 32, asm_blend: float = 0.0, flip_tta: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network units (K, N, 2), pose (K, 3) and ASM distance (K,) for crops, in batches.

    The ASM distance is the mean distance between the prediction and its ASM projection in
    normalised crop units. ``asm_blend`` in [0, 1] moves the prediction towards that projection.
    ``flip_tta`` also runs the mirrored crops and averages both (twice the network time).
    """
    units, pose, _, _ = _network(model, crops, batch_size, flip_tta)
    units, distance = _asm(model.info, units, asm_blend)
    return units, pose, distance


def _asm(info: ModelInfo, units: np.ndarray, asm_blend: float) -> tuple[np.ndarray, np.ndarray]:
    projected = info.shape_model.project(units)
    distance = np.linalg.norm(units - projected, axis=-1).mean(axis=-1)
    if asm_blend:
        units = (1.0 - asm_blend) * units + asm_blend * projected
    return units, distance


def units_to_image(units: np.ndarray, matrices: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Network units (K, N, 2) -> image coordinates (annotation files' convention) via each inverse warp."""
    return _units_to_pixels(units, matrices, info.input_size) + info.label_origin


def _units_to_pixels(units: np.ndarray, matrices: np.ndarray, size: int) -> np.ndarray:
    """Network units (K, N, 2) -> 0-based image pixels through each crop's inverse matrix."""
    crop_px = from_normalised(units, size)
    if len(crop_px) == 0:
        return np.zeros_like(crop_px)
    return np.stack([transform_points(c, invert_affine(m)) for c, m in zip(crop_px, matrices)])


def quality_score(crop_distance: np.ndarray, crop_sides: np.ndarray, points: np.ndarray, info: ModelInfo
                  ) -> np.ndarray:
    """The failure score of :class:`Alignment`: a mean point distance in crop units (K,) in
    percent of the predicted inter-ocular distance of ``points`` (K, N, 2) (image pixels)."""
    a, b = info.markup.outer_eye_corners
    inter_ocular = np.linalg.norm(points[:, a] - points[:, b], axis=-1)
    return 100.0 * np.asarray(crop_distance) * crop_sides / np.maximum(inter_ocular, 1e-6 * crop_sides)


def align_faces(
    model: LandmarkModel,
    images: Sequence[np.ndarray],
    owner: np.ndarray,
    boxes: np.ndarray,
    angles: np.ndarray | None = None,
    refine: int = 0,
    straighten: bool = False,
    batch_size: int = 32,
    asm_blend: float = 0.0,
    flip_tta: bool = False,
    channel_order: str = "bgr",
    trace: list | None = None,
    early_stop: tuple[float, float] | None = None,
    mirror_recrop: bool = MIRROR_FIRST_RECROP,
) -> Alignment:
    """Landmarks and pose of faces in several images: face k is ``boxes[k]`` in ``images[owner[k]]``.

    ``boxes`` (K, 4) are reference boxes in the annotation files' convention; ``angles`` (K,)
    optionally rotate each first crop (degrees, counter-clockwise as displayed: 90 reads a face
    lying on its right side). ``refine`` second-look passes crop again from the previous
    prediction (``straighten``: rotated upright). Each pass sends all faces through the network
    in batches of ``batch_size``. ``images`` are BGR, or pixels in ``channel_order`` (see
    :func:`crop_faces`). With ``refine`` >= 1 the result is the mean of the second-look
    passes (each cropped from the one before), and of the first pass where it was close (below).

    ``early_stop`` (max move in % of the inter-ocular distance, max turn in degrees; used with
    ``refine`` >= 2, see :data:`EARLY_STOP`): a face whose first re-crop moved its points and
    turned its crop no more than that stops there; its result is the mean of its first pass and
    that re-crop (two good, different crops: a better pair to average than two crops from
    landmarks) and its quality the one-re-crop kind's (``learned1`` / ``refine1``; a ``refine1``
    move is put on the ``refine2`` scale by the ratio of the kinds' thresholds). With or without
    early stop, a face whose first re-crop stayed within :data:`FIRST_PASS_JOINS` averages its
    first pass into its points and pose too (its quality still uses the second-look passes'
    error estimate). ``Alignment.passes`` says how many network passes each face took.

    ``mirror_recrop`` (see :data:`MIRROR_FIRST_RECROP`; ignored under ``flip_tta``): the first
    re-crop runs on the mirrored crop, its points and pose mirrored back.

    ``trace``, when given, receives one dict per pass (``points`` (K, N, 2) in 0-based image
    pixels, NaN for faces that had stopped; ``error``: the error head's output or None; for
    fitting and measuring the quality score). Raises ValueError for a box the crop cannot use.
    """
    info = model.info
    size, n = info.input_size, info.markup.n_points
    owner = np.asarray(owner, dtype=int).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) != len(owner):
        raise ValueError(f"{len(boxes)} boxes for {len(owner)} owners")
    kind = model_quality_kind(model, refine, flip_tta)
    k = len(boxes)
    if k == 0:
        z = np.zeros(0)
        scores = {quality_kind(refine, flip_tta): z, kind: z}
        return Alignment(np.zeros((0, n, 2)), np.zeros((0, 3)), z, kind, z, z if refine else None,
                         z if flip_tta else None, z, np.zeros((0, 2, 3)), z if model.has_error else None, scores,
                         np.zeros(0, int))
    angles = np.zeros(k) if angles is None else np.asarray(angles, dtype=np.float64).reshape(-1).copy()
    first_angles = angles.copy()
    centers, sides = box_frames(boxes, info)
    mean_shape = info.shape_model.mean.reshape(-1, 2)
    points, pose, matrices = np.zeros((k, n, 2)), np.zeros((k, 3)), np.zeros((k, 2, 3))
    distance, passes = np.zeros(k), np.zeros(k, dtype=int)
    shift = np.zeros(k) if refine else None
    gap = np.zeros(k) if flip_tta else None
    # each pass: the faces it ran on, their points, image-frame pose and error-head output (NaN
    # for the faces that had stopped)
    steps: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
    active = np.arange(k)
    first_kept = np.zeros(k, dtype=bool)  # the first pass joins the mean (FIRST_PASS_JOINS)
    for step in range(refine + 1):
        if step:  # the second look: crop again from the previous prediction
            if straighten:
                angles[active] = shape_roll(points[active], mean_shape)
            centers[active], sides[active] = point_frames(points[active], info.crop_scale,
                                                          angles[active] if straighten else None)
        mats = np.stack([crop_matrix(centers[i], sides[i], size, angles[i]) for i in active])
        crops = warp_crops(images, owner[active], mats, size, channel_order)
        mirror = mirror_recrop and step == 1 and not flip_tta
        units, crop_pose, part_gap, part_error = _network(model, crops, batch_size, flip_tta, mirror)
        units, distance[active] = _asm(info, units, asm_blend)
        new_points = _units_to_pixels(units, mats, size)
        if step:  # how far this pass moved the points, in units of its crop side
            shift[active] = np.linalg.norm(new_points - points[active], axis=-1).mean(-1) / sides[active]
        if flip_tta:
            gap[active] = part_gap
        points[active], matrices[active], passes[active] = new_points, mats, step + 1
        pose[active] = np.stack([rotate_pose_in_image(p, -angles[i]) if angles[i] else p
                                 for p, i in zip(crop_pose, active)])
        ran = np.zeros(k, dtype=bool)
        ran[active] = True
        error = None
        if part_error is not None:
            error = np.full(k, np.nan)
            error[active] = part_error
        steps.append((ran, np.where(ran[:, None, None], points, np.nan), np.where(ran[:, None], pose, np.nan), error))
        if trace is not None:
            trace.append({"points": steps[-1][1], "error": error})
        if step == 1:  # how far the first re-crop moved and turned each face
            moved = quality_score(shift[active], sides[active], points[active], info)
            turned = np.abs((angles[active] - first_angles[active] + 180.0) % 360.0 - 180.0)
            first_kept[active] = (moved <= FIRST_PASS_JOINS[0]) & (turned <= FIRST_PASS_JOINS[1])
            if early_stop is not None and refine >= 2:
                active = active[(moved > early_stop[0]) | (turned > early_stop[1])]
                if not len(active):
                    break
    # the passes the error head's estimate averages (and the result, but for FIRST_PASS_JOINS below):
    # the second-look ones (each cropped from the one before: equally good, their mean is a free
    # ensemble); the first and the re-crop where it stopped
    stopped = (passes == 2) & (refine >= 2)
    use = np.stack([st[0] for st in steps])  # every pass a face ran on ...
    use[0] &= (refine == 0) | stopped  # ... but the first, unless it is the only one or the face stopped
    # points and pose also average the first pass where it was close (FIRST_PASS_JOINS); the error
    # estimate keeps the passes above, on which the quality score is calibrated
    use_points = use.copy()
    use_points[0] |= first_kept
    if refine >= 1:
        points = np.nanmean(np.where(use_points[:, :, None, None], np.stack([st[1] for st in steps]), np.nan), axis=0)
        # angles averaged on the circle: rolls of 179 and -179 degrees mean 180, not 0
        circle = np.where(use_points[:, :, None], np.exp(1j * np.deg2rad(np.stack([st[2] for st in steps]))), 0)
        pose = np.rad2deg(np.angle(circle.sum(0) / use_points.sum(0)[:, None]))
    move_kind = quality_kind(refine, flip_tta)
    part = shift if move_kind.startswith("refine") else gap if move_kind == "flip" else distance
    scores = {move_kind: quality_score(part, sides, points, info)}
    error = None
    if steps[0][3] is not None:
        error = np.nanmean(np.where(use, np.stack([st[3] for st in steps]), np.nan), axis=0)
    if kind != move_kind:  # learned: the error head's estimate with the last pass's move
        scores[kind] = info.quality_model.score(kind, error, scores[move_kind] if refine else None)
    if stopped.any():
        scores[kind] = _stopped_quality(model, kind, move_kind, stopped, scores, error)
    return Alignment(points + info.label_origin, pose, scores[kind], kind, distance, shift, gap, angles, matrices,
                     error, scores, passes)


def _stopped_quality(model: LandmarkModel, kind: str, move_kind: str, stopped: np.ndarray,
                     scores: dict[str, np.ndarray], error: np.ndarray | None) -> np.ndarray:
    """The quality of faces whose second look stopped after one re-crop: the one-re-crop kind's
    score (``learned1``: an estimated NME like ``learned2``; ``refine1``: the move of that
    re-crop, times the ratio of the ``refine2`` and ``refine1`` thresholds, each flagging 5 % of
    validation faces), the others' unchanged."""
    info = model.info
    one = model_quality_kind(model, 1, False)
    if one != "refine1":
        stopped_scores = info.quality_model.score(one, error, scores[move_kind])
    else:
        t1, t2 = info.quality_thresholds.get("refine1"), info.quality_thresholds.get("refine2")
        stopped_scores = scores[move_kind] * (t2 / t1) if t1 and t2 else scores[move_kind]
    return np.where(stopped, stopped_scores, scores[kind])


def align_boxes(
    model: LandmarkModel,
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    batch_size: int = 32,
    asm_blend: float = 0.0,
    flip_tta: bool = False,
    channel_order: str = "bgr",
    refine: int = 0,
    straighten: bool = False,
    angles: np.ndarray | None = None,
    early_stop: tuple[float, float] | None = None,
    mirror_recrop: bool = MIRROR_FIRST_RECROP,
) -> Alignment:
    """:func:`align_faces` for reference boxes (K, 4) in one image (annotation files' convention)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return align_faces(model, [image_bgr], np.zeros(len(boxes), int), boxes, angles, refine, straighten,
                       batch_size, asm_blend, flip_tta, channel_order, early_stop=early_stop,
                       mirror_recrop=mirror_recrop)
