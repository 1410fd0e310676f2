"""The one-call Python API: ``FaceAligner()(image) -> [Face, ...]``."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .align import AlignedFace
from .errors import AsmnetError, AsmnetWarning, DataError, ModelError, SettingError, first_line
from .formats.image import (
    DEFAULT_CHANNEL_ORDER,
    as_pixels,
    check_channel_order,
    read_image_reduced,
    to_bgr,
    to_channels,
)
from .geometry import invert_affine, tight_box, transform_points
from .inference import DEFAULT_REFINE, EARLY_STOP, align_boxes, model_quality_kind
from .regions import RegionRefiner, load_refiner
from .runtime import load_model

MAX_REFINE = 5  # second-look passes, as asmnet predict --refine takes them
MAX_THREADS = 1024  # as --threads takes them


class UnflaggedWarning(AsmnetWarning):
    """A FaceAligner whose model has no quality threshold for its score: ``Face.flagged`` is None
    (not judged) rather than False. The command line prints it as one ``asmnet: note:`` line."""


@dataclass
class Face:
    """One face.

    ``box``: (x1, y1, x2, y2), the tight box of ``landmarks`` (the same convention as the
    ``boxes=`` that ``FaceAligner`` takes, so a face's box can be passed back for the next
    frame); the same meaning for photos and video. ``detector_box``: the face detector's own box
    (its convention, e.g. dlib's square) when a detector found this face in this image, else None
    (faces from ``boxes=``, video frames where the face was tracked rather than detected).
    ``score``: the detector score (1.0 for given boxes). ``landmarks`` (N, 2) in image pixels;
    ``pose`` (yaw, pitch, roll) in degrees (yaw > 0: turned towards the image's left; pitch > 0:
    looking up; roll > 0: tilted clockwise as displayed); ``quality``: a failure score in percent
    of the face's inter-ocular distance, like an NME (smaller is better). With the default model
    it is the estimated NME (``FaceAligner.quality_kind`` ``learned2``, :mod:`asmnet.quality`):
    the network's error head, a linear read-out of the features the landmarks come from, fitted
    to predict the error, combined with how far the last second-look pass moved the points.
    Models without an error head (and the torch backend) give how far the last pass moved the
    points (a face the network reads the same way from two crops barely moves, while a non-face,
    a face turned far from upright or a misplaced box does), without a second look the gap to
    the mirrored crop's prediction (``flip_tta``), else the distance from the shape model. Above
    ``FaceAligner.quality_threshold`` (the model's threshold for that score, set to flag 5 % of
    validation faces) the face is ``flagged`` as a likely failure; ``flagged`` is None when the
    model has no threshold for the score (not judged, see ``FaceAligner.quality_note``)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    pose: np.ndarray
    quality: float
    flagged: bool | None = False
    detector_box: np.ndarray | None = None

    def __repr__(self) -> str:
        """One short line: the arrays are summarised (``face.landmarks`` holds the points)."""
        box = ", ".join(f"{float(v):.1f}" for v in self.box)
        yaw, pitch, roll = (float(v) for v in self.pose)
        return (f"Face(box=({box}), score={float(self.score):.3g}, {len(self.landmarks)} landmarks, "
                f"pose=(yaw {yaw:+.1f}, pitch {pitch:+.1f}, roll {roll:+.1f}), quality={float(self.quality):.3g}, "
                f"flagged={self.flagged}{'' if self.detector_box is None else ', detected'})")

    @property
    def yaw(self) -> float:
        return float(self.pose[0])

    @property
    def pitch(self) -> float:
        return float(self.pose[1])

    @property
    def roll(self) -> float:
        return float(self.pose[2])

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """JSON-ready record (the schema of ``asmnet predict``)."""
        return {
            "box": [round(float(v), decimals) for v in self.box],
            "detector_box": None if self.detector_box is None else [round(float(v), decimals) for v in self.detector_box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.landmarks],
            "pose": {"yaw": round(self.yaw, decimals), "pitch": round(self.pitch, decimals),
                     "roll": round(self.roll, decimals)},
            "quality": round(float(self.quality), 5),
            "flagged": None if self.flagged is None else bool(self.flagged),
        }


def at_full_size(face: Face, factor: int, origin: float = 0.0) -> Face:
    """``face`` found in an image reduced by ``factor`` (see ``read_image_reduced``), in the
    full image's pixels: pixel centres map as (x - origin + 0.5) * factor - 0.5 + origin, where
    ``origin`` is the index the coordinates give the first pixel's centre."""
    def scale(values: Any) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - origin + 0.5) * factor - 0.5 + origin

    return dataclasses.replace(face, box=scale(face.box), landmarks=scale(face.landmarks))


def boxes_array(boxes: Any) -> np.ndarray:
    """``boxes`` (x1, y1, x2, y2 each) as a (K, 4) float array; DataError unless every box is
    finite, within +-1e7 pixels and has a positive width and height."""
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(None, f"boxes must be numbers (x1, y1, x2, y2) per box ({exc})") from None
    if array.size % 4 or (array.ndim > 1 and array.shape[-1] != 4) or array.ndim > 2:
        raise DataError(None, f"boxes must have 4 numbers (x1, y1, x2, y2) per box, got shape {array.shape}")
    array = array.reshape(-1, 4)
    for i, (x1, y1, x2, y2) in enumerate(array):
        if not np.isfinite([x1, y1, x2, y2]).all() or np.abs([x1, y1, x2, y2]).max() > 1e7:
            raise DataError(None, f"box {i} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not finite or lies beyond +-1e7 pixels")
        if x2 <= x1 or y2 <= y1:
            raise DataError(None, f"box {i} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has a width or height <= 0 "
                            "(expected x1 < x2 and y1 < y2)")
    return array


def _real(value: Any) -> bool:
    """A number (not a bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    """A whole number (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_settings(model: Any, detector: Any, backend: Any, threads: Any, asm_blend: Any, min_score: Any,
                    pixel_origin: Any, refine: Any, switches: dict[str, Any]) -> None:
    """SettingError for a FaceAligner setting of the wrong type or out of range (before any
    loading); the limits are the command line's."""
    from .runtime import BACKENDS

    if model is not None and not isinstance(model, (str, Path)):
        raise SettingError(None, f"model must be a name, a path or None, got {type(model).__name__}")
    if detector is not None and not isinstance(detector, str) and not (hasattr(detector, "detect")
                                                                       and hasattr(detector, "name")):
        raise SettingError(None, "detector must be a name, an object with .detect(image) and .name, or None "
                           f"(boxes only), got {detector!r}")
    if backend not in BACKENDS:
        raise SettingError(None, f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if threads is not None and not (_whole(threads) and 1 <= threads <= MAX_THREADS):
        raise SettingError(None, f"threads must be a whole number in 1..{MAX_THREADS} or None, got {threads!r}")
    if not (_real(asm_blend) and 0.0 <= asm_blend <= 1.0):
        raise SettingError(None, f"asm_blend must be a number in [0, 1], got {asm_blend!r}")
    if min_score is not None and not (_real(min_score) and np.isfinite(min_score)):
        raise SettingError(None, f"min_score must be a finite number or None, got {min_score!r}")
    if not (_real(pixel_origin) and np.isfinite(pixel_origin)):
        raise SettingError(None, f"pixel_origin must be a finite number (0: OpenCV, 1: iBUG .pts), got {pixel_origin!r}")
    if not (_whole(refine) and 0 <= refine <= MAX_REFINE):
        raise SettingError(None, f"refine must be a whole number in 0..{MAX_REFINE}, got {refine!r}")
    for name, value in switches.items():  # on/off settings: "no" or 0.5 would silently mean on
        if not isinstance(value, (bool, np.bool_)):
            raise SettingError(None, f"{name} must be True or False, got {value!r}")


def _make_detector(spec: Any, options: dict[str, Any], preset: str | None = None) -> Any:
    """The face detector of a FaceAligner: built from a name with ``options`` over those of
    ``preset``, the object given, or None. SettingError for an unknown name, preset or a bad
    option, ModelError when it cannot be built here."""
    if preset is not None and not isinstance(preset, str):
        raise SettingError(None, f"preset must be a name (e.g. 'recall') or None, got {preset!r}")
    if spec is None or not isinstance(spec, str):
        if options or preset:
            what = "no detector (detector=None)" if spec is None else "a detector object"
            given = f"detector options {sorted(options)}" if options else f"preset {preset!r}"
            raise SettingError(None, f"{given} given with {what}")
        return spec
    from .detection import DetectorOptionError, UnknownDetectorError, make_detector

    try:
        return make_detector(spec, preset=preset, **options)
    except (UnknownDetectorError, DetectorOptionError) as exc:
        raise SettingError(None, exc.problem) from None
    except AsmnetError:
        raise
    except (TypeError, ValueError) as exc:  # a detector option of the wrong type or range
        raise SettingError(None, f"detector {spec!r}: bad option ({first_line(exc)})") from None


@dataclass
class AlignerSettings:
    """The settings of a :class:`FaceAligner` as data (its constructor's arguments of the same
    names; ``detector_options``: its detector keywords), for what builds aligners elsewhere:
    ``asmnet predict`` / ``asmnet align``, their worker processes and Ray actors all build theirs
    with :meth:`FaceAligner.from_settings`, so that they give the same records."""

    model: str | None = None
    detector: str = "auto"
    backend: str = "auto"
    threads: int | None = None
    min_score: float | None = None  # drop detections scoring below this
    flip_tta: bool = False  # average with the mirrored face (2x network time)
    pixel_origin: float = 0.0  # the first pixel's centre in the output coordinates (0: OpenCV, 1: iBUG .pts)
    refine: int = DEFAULT_REFINE  # second-look passes from the predicted points
    straighten: bool = True  # second look: turn the crop upright
    rotation_search: bool = False  # no face upright: search the image turned by 90/180/270 degrees
    early_stop: bool = True  # second look: stop after one re-crop that moved the face little
    refine_regions: bool | None = None  # the package's refiner (None: when it has one)
    detector_options: dict = field(default_factory=dict)  # make_detector keywords (model_path, min_face, upsample)

    def aligner_settings(self) -> AlignerSettings:
        """These settings alone (a copy), without the fields a subclass adds."""
        names = [f.name for f in dataclasses.fields(AlignerSettings)]
        return AlignerSettings(**{name: getattr(self, name) for name in names})


class FaceAligner:
    """Detect faces and predict their landmarks and head pose.

    Example::

        >>> from asmnet import FaceAligner
        >>> aligner = FaceAligner()                      # the shipped default model, offline
        >>> faces = aligner("photo.jpg")                 # doctest: +SKIP
        >>> faces[0].landmarks.shape, faces[0].pose      # doctest: +SKIP
        ((68, 2), array([ 3.1, -7.9,  0.4]))

    ``image`` may be a path, a PIL image or a NumPy array. **Channel order** (the same rule as
    :meth:`asmnet.FaceTracker.update`): an array is BGR, OpenCV's order (``cv2.imread``,
    ``cv2.VideoCapture``), unless ``channel_order="rgb"`` (PIL, matplotlib, skimage, imageio);
    paths and PIL images are read in their own known order; arrays that come back (aligned crops)
    are in ``channel_order`` too. Gray and BGRA/RGBA arrays work.
    ``boxes=[(x1, y1, x2, y2), ...]`` skips detection; such boxes are taken in the model's own box
    convention (the tight box of the 68 points; a face detector's box should be calibrated, which
    the built-in detectors are). All faces of an image go through the network in one batch.

    Every setting is checked here, not at the first call: a setting of the wrong type or out of
    range raises :class:`asmnet.errors.SettingError` (a DataError), a model that cannot be
    loaded or has no box calibration for the detector :class:`asmnet.ModelError`. The detector
    is built here too; ``detector=None`` builds none (every call then needs ``boxes=``).

    Coordinates (landmarks, boxes in and out) are in the convention ``pixel_origin`` names: the
    position of the first pixel's centre. 0 (the default) is OpenCV's, dlib's and
    face-alignment's (``cv2.circle(image, (round(x), round(y)), ...)`` hits the right pixel);
    1 is the iBUG ``.pts`` annotation files' (Matlab) convention.

    The second look (``refine`` passes re-cropped from the predicted points, ``straighten``ed
    upright) runs up to 2 extra passes; with ``early_stop`` (the default) a face that the first
    re-crop moved and turned only a little stops after it, its result the mean of both crops
    (cheaper and, on the validation faces, as accurate or better: see benchmarks/README.md).

    ``refine_regions``: last, the model package's refiner (:mod:`asmnet.regions`) moves the points:
    ``"accurate"``'s looks at each face part (eyes, brows, nose, mouth, jaw) again at the image's
    own resolution, on faces large enough to hold more detail than the network's crop, and then
    corrects every point from the whole shape (:mod:`asmnet.shape_regression`); ``"default"``'s
    is that shape correction alone. None (the default) uses it when the package has one; True
    requires one (ModelError without); False never uses it (the network's own points).

    ``preset="recall"`` gives the detector the options that find more tilted faces (MTCNN: the
    image also searched turned by +-30 degrees; dlib's HOG: threshold -0.4), at 2-4 times the
    detector's cost, so it is not the default (:mod:`asmnet.detection.presets`; options given
    here win over the preset's).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        detector: str | Any = "auto",
        backend: str = "auto",
        threads: int | None = None,
        asm_blend: float = 0.0,
        min_score: float | None = None,
        flip_tta: bool = False,
        pixel_origin: float = 0.0,
        refine: int = DEFAULT_REFINE,
        straighten: bool = True,
        rotation_search: bool = False,
        early_stop: bool = True,
        refine_regions: bool | None = None,
        preset: str | None = None,
        **detector_options: Any,
    ):
        _check_settings(model, detector, backend, threads, asm_blend, min_score, pixel_origin, refine,
                        {"flip_tta": flip_tta, "straighten": straighten, "rotation_search": rotation_search,
                         "early_stop": early_stop})
        if refine_regions is not None and not isinstance(refine_regions, bool):
            raise SettingError(None, f"refine_regions must be True, False or None (the model's choice), got {refine_regions!r}")
        self.pixel_origin = float(pixel_origin)  # the first pixel's centre in every coordinate in and out
        self.model = load_model(model, backend=backend, threads=threads)
        # the model package's refiner/ (part networks and / or shape regression), used when the
        # package has one (the shipped 'default' and 'accurate') unless refine_regions=False
        self._refiner = None if refine_regions is False else load_refiner(model, required=bool(refine_regions))
        self.asm_blend = float(asm_blend)
        self.flip_tta = bool(flip_tta)  # average with the mirrored crop: 2x network time, ~2 % lower NME
        # the second look: re-crop from the predicted points (and turn the crop upright), then predict again
        self.refine = int(refine)
        self.straighten = bool(straighten)
        # stop after one re-crop where it moved and turned the face little (inference.EARLY_STOP)
        self.early_stop = bool(early_stop)
        self.rotation_search = bool(rotation_search)  # no face upright: search the image turned by 90/180/270
        self.min_score = min_score  # detections scoring below this are dropped (detector's own scale)
        self._quality_threshold: float | None = None
        self._detector = _make_detector(detector, detector_options, preset)
        # the detector's box calibration for this model: a model without one fails here, not at the first photo
        self._calibration = None if self._detector is None else self._find_calibration(self._detector)
        note = self.quality_note
        if note:
            warnings.warn(note, UnflaggedWarning, stacklevel=2)

    @classmethod
    def from_settings(cls, settings: AlignerSettings, default_threads: int | None = None) -> FaceAligner:
        """The FaceAligner of ``settings``; ``default_threads``: ONNX Runtime threads when
        ``settings.threads`` is None (None: ONNX Runtime's choice). Raises as the constructor."""
        return cls(settings.model, detector=settings.detector, backend=settings.backend,
                   threads=settings.threads or default_threads, min_score=settings.min_score,
                   flip_tta=settings.flip_tta, pixel_origin=settings.pixel_origin, refine=settings.refine,
                   straighten=settings.straighten, rotation_search=settings.rotation_search,
                   early_stop=settings.early_stop, refine_regions=settings.refine_regions,
                   **settings.detector_options)

    def _find_calibration(self, detector: Any) -> Any:
        """The model's box calibration for ``detector``; ModelError when it has none."""
        try:
            return self.model.info.calibrations.for_detector(detector, self.model.info.name)
        except ModelError as exc:
            raise ModelError(exc.path, exc.problem.replace(
                "(run scripts/calibrate_detectors.py, ", "(asmnet export fits them for a checkpoint; ")
                + "; detector=None skips detection") from None
        except (AttributeError, TypeError) as exc:  # an object without FaceDetector's options() / box_options
            raise SettingError(None, f"detector {getattr(detector, 'name', detector)!r} is not a FaceDetector "
                               f"(asmnet.detection.FaceDetector: detect, name, options, box_options): {exc}") from None

    @property
    def refiner(self) -> RegionRefiner | None:
        """The region refiner these settings use (the model package's), or None."""
        return self._refiner

    @property
    def quality_threshold(self) -> float | None:
        """Faces whose ``quality`` is above this are ``flagged``: unless set, the model's threshold
        (model.json ``quality_thresholds``) for the score these settings give (refine, flip_tta);
        None (nothing flagged) when the model has none for it."""
        if self._quality_threshold is not None:
            return self._quality_threshold
        return self.model.info.quality_thresholds.get(self.quality_kind)

    @property
    def quality_note(self) -> str | None:
        """None when faces are judged (``flagged`` is True or False); otherwise one line saying
        why ``Face.flagged`` is None: the model has no quality threshold for its score."""
        if self.quality_threshold is not None:
            return None
        return (f"model {self.model.info.name!r} has no quality threshold for its {self.quality_kind!r} score: "
                "faces are not judged (flagged: None); asmnet export fits one on the run's validation faces")

    @property
    def quality_kind(self) -> str:
        """The kind of score ``Face.quality`` is with this model and these settings
        (:func:`asmnet.inference.model_quality_kind`: ``learned2`` for the default)."""
        return model_quality_kind(self.model, self.refine, self.flip_tta)

    @quality_threshold.setter
    def quality_threshold(self, value: float | None) -> None:
        self._quality_threshold = None if value is None else float(value)

    @property
    def detector(self) -> Any:
        """The face detector (built with the aligner), or None (``detector=None``: boxes only)."""
        return self._detector

    def __call__(self, image: Any, boxes: Any = None, channel_order: str = DEFAULT_CHANNEL_ORDER) -> list[Face]:
        """The faces of one image (path, PIL image or NumPy array; arrays are BGR unless
        ``channel_order="rgb"``), each with landmarks and pose. ``boxes`` (in ``pixel_origin``'s
        convention) skips detection. Raises DataError for an unreadable image, bad boxes or a
        call without boxes on an aligner without a detector. A file of more than
        REDUCE_ABOVE_PIXELS pixels is decoded reduced; boxes and landmarks are still in its
        full-size pixels."""
        check_channel_order(channel_order)
        if isinstance(image, (str, Path)):
            bgr, _, factor = read_image_reduced(image)
            if factor > 1:
                origin = self.pixel_origin
                small = None if boxes is None else (boxes_array(boxes) - origin + 0.5) / factor - 0.5 + origin
                return [at_full_size(face, factor, origin) for face in self._faces(bgr, "bgr", small)]
            return self._faces(bgr, "bgr", boxes)
        pixels, order = as_pixels(image, channel_order)
        return self._faces(pixels, order, boxes)

    def predict_batch(self, images: Iterable[Any], boxes: Iterable[Any] | None = None,
                      channel_order: str = DEFAULT_CHANNEL_ORDER) -> list[list[Face]]:
        """The faces of each image (like face-alignment's ``get_landmarks_from_batch``):
        ``[aligner(image) for image in images]``, with per-image ``boxes`` when given. The faces
        of one image already share a network batch; across images a CPU gains nothing more.
        Raises as :meth:`__call__`."""
        images = list(images)
        per_image = [None] * len(images) if boxes is None else list(boxes)
        if len(per_image) != len(images):
            raise DataError(None, f"{len(per_image)} box lists for {len(images)} images")
        return [self(image, b, channel_order) for image, b in zip(images, per_image)]

    def predict_directory(self, folder: str | Path, recursive: bool = True,
                          skip_errors: bool = False) -> dict[str, list[Face]]:
        """Path -> faces for every image in ``folder`` (like face-alignment's
        ``get_landmarks_from_directory``; sorted; sub-folders too unless ``recursive=False``).
        Raises DataError for a missing folder, or for an unreadable image unless ``skip_errors``
        (such files are then left out)."""
        from .formats import IMAGE_EXTENSIONS

        root = Path(folder)
        if not root.is_dir():
            raise DataError(root, "no such folder")
        files = sorted(p for p in (root.rglob("*") if recursive else root.iterdir())
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        out: dict[str, list[Face]] = {}
        for path in files:
            try:
                out[str(path)] = self(path)
            except DataError:
                if not skip_errors:
                    raise
        return out

    def align(self, image: Any, size: int | None = None, template: str = "arcface", boxes: Any = None,
              channel_order: str = DEFAULT_CHANNEL_ORDER, skip_flagged: bool = False) -> list[AlignedFace]:
        """Aligned crops of the faces of one image (see :mod:`asmnet.align`): ``template``
        "arcface" (5-point similarity, 112 px by default), "ffhq" (256) or "dlib" (dlib's
        get_face_chip-like, 150), ``size`` pixels a side (16..4096). Crops come in
        ``channel_order`` (BGR unless ``channel_order="rgb"``), the order an input array is
        taken in. ``skip_flagged``: leave out the faces flagged as likely failures (no crop).
        Raises SettingError (a DataError) for an unknown template, a bad size or ``skip_flagged``
        not a bool, ModelError for ``skip_flagged`` with a model that has no quality threshold
        (see :attr:`quality_note`), and as :meth:`__call__`."""
        from .align import aligned_crops, check_template

        size = check_template(template, size)
        if not isinstance(skip_flagged, (bool, np.bool_)):
            raise SettingError(None, f"skip_flagged must be True or False, got {skip_flagged!r}")
        if skip_flagged and self.quality_threshold is None:
            raise ModelError(None, f"skip_flagged needs a quality threshold: {self.quality_note}")
        check_channel_order(channel_order)
        pixels, order = as_pixels(image, channel_order)
        faces = self._faces(pixels, order, boxes)
        if skip_flagged:
            faces = [face for face in faces if not face.flagged]
        mean = self.model.info.shape_model.mean.reshape(-1, 2) if template == "dlib" else None
        crops = aligned_crops(pixels, faces, template, size, self.pixel_origin, mean)
        return [AlignedFace(to_channels(crop, order, channel_order), matrix, points, face, template)
                for (crop, matrix, points), face in zip(crops, faces)]

    def _faces(self, pixels: np.ndarray, order: str, boxes: Any) -> list[Face]:
        """The faces of an image already read by :func:`as_pixels`.

        With ``rotation_search``, when the upright image gives no face, or only flagged ones, the
        image turned by 90, 180 and 270 degrees is searched in turn: the first turn with a face
        that is not flagged gives its faces (else the turn with the best quality); their boxes are
        mapped back to this image and their first crop turned accordingly, so points and pose are
        always in this image's frame."""
        # the network side works in the model's annotation convention; shift in and out once
        shift = self.model.info.annotation_origin - self.pixel_origin
        if boxes is not None:
            given = boxes_array(boxes)
            return self._align(pixels, order, [None] * len(given), np.ones(len(given)), given + shift, None, shift)
        if self._detector is None:
            raise DataError(None, "this FaceAligner has no detector (detector=None): pass boxes=")
        best: list[Face] = []
        for turn in (0, 1, 2, 3) if self.rotation_search else (0,):
            found, scores, ref = self._detect(pixels, order, turn)
            if not len(ref):
                continue
            faces = self._align(pixels, order, found, scores, ref, np.full(len(ref), 90.0 * turn), shift)
            if not all(f.flagged for f in faces):
                return faces
            if not best or min(f.quality for f in faces) < min(f.quality for f in best):
                best = faces
        return best

    def _align(self, pixels: np.ndarray, order: str, found: list, scores: np.ndarray, ref: np.ndarray,
               angles: np.ndarray | None, shift: float) -> list[Face]:
        """Faces from reference boxes (the model's convention) through the network and second look;
        ``found``: each face's detector box (``pixel_origin``'s convention) or None."""
        out = align_boxes(self.model, pixels, ref, asm_blend=self.asm_blend, flip_tta=self.flip_tta,
                          channel_order=order, refine=self.refine, straighten=self.straighten, angles=angles,
                          early_stop=EARLY_STOP if self.early_stop else None)
        landmarks = out.landmarks
        if self._refiner is not None:
            landmarks = self._refiner.refine([pixels], np.zeros(len(ref), dtype=int), landmarks,
                                             self.model.info.label_origin, channel_order=order)
        landmarks = landmarks - shift
        threshold = self.quality_threshold
        return [
            Face(tight_box(landmarks[i]), float(scores[i]), landmarks[i], out.pose[i], float(out.quality[i]),
                 None if threshold is None else bool(out.quality[i] > threshold), detector_box=found[i])
            for i in range(len(ref))
        ]

    def _detect(self, pixels: np.ndarray, order: str, turn: int = 0) -> tuple[list, np.ndarray, np.ndarray]:
        """Detector boxes (K of (4,); ``pixel_origin``'s convention), scores (K,) and reference boxes
        (K, 4; the model's) of the faces found in the image turned counter-clockwise by ``turn``
        x 90 degrees, in this image's pixels."""
        from .detection import to_reference_box

        view = np.ascontiguousarray(np.rot90(pixels, turn)) if turn else pixels
        # detectors only read the picture: a BGR one goes as it is (a copy costs ~0.1 ms at 640x480)
        bgr = view if order == "bgr" and view.ndim == 3 and view.shape[2] == 3 else to_bgr(view, order)
        dets = self.detector.detect(bgr)
        if self.min_score is not None:
            dets = [d for d in dets if d.score >= self.min_score]
        if not dets:
            empty = np.zeros((0, 4))
            return empty, np.zeros(0), empty
        calib = self._calibration
        shown = np.array([d.box for d in dets]).reshape(-1, 4)  # detectors: 0-based pixels
        scores = np.array([d.score for d in dets])
        ref = np.array([to_reference_box(d.box, calib) for d in dets]).reshape(-1, 4)
        if turn:  # boxes found in the turned view, back in this image's pixels
            origin = self.model.info.label_origin  # reference boxes are cropped from ref - label_origin
            back = rot90_matrix(turn, pixels.shape, inverse=True)
            shown, ref = turn_boxes(shown, back), turn_boxes(ref - origin, back) + origin
        return list(shown + self.pixel_origin), scores, ref


def rot90_matrix(k: int, shape: tuple[int, ...], inverse: bool = False) -> np.ndarray:
    """2x3 affine from the pixels of an image of ``shape`` to those of ``np.rot90(image, k)``
    (turned counter-clockwise as displayed by 90k degrees); ``inverse``: from the turned back."""
    h, w = shape[:2]
    k %= 4
    # where a pixel (x, y) lands: np.rot90 counter-clockwise once maps (x, y) -> (y, w - 1 - x)
    m = {0: [[1, 0, 0], [0, 1, 0]], 1: [[0, 1, 0], [-1, 0, w - 1]],
         2: [[-1, 0, w - 1], [0, -1, h - 1]], 3: [[0, -1, h - 1], [1, 0, 0]]}[k]
    m = np.array(m, dtype=np.float64)
    return invert_affine(m) if inverse else m


def turn_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Axis-aligned boxes (K, 4) through a 2x3 affine that turns by a multiple of 90 degrees."""
    corners = transform_points(np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2), matrix)
    return np.concatenate([corners.min(1), corners.max(1)], axis=1)
