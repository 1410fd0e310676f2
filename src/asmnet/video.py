"""Video: a detect-then-track face tracker with temporal smoothing (the 1€ filter), no torch.

>>> from asmnet import FaceTracker
>>> tracker = FaceTracker()                                  # a FaceAligner() inside
>>> for frame in tracker.track("clip.mp4"):                  # doctest: +SKIP
...     for face in frame.faces:                             # TrackedFace, sorted by id
...         print(frame.index, face.id, face.landmarks.shape, face.pose)
>>> faces = tracker.update(frame_bgr, timestamp)             # doctest: +SKIP  (frames you read yourself)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .api import Face, FaceAligner
from .detection import box_iou
from .errors import DataError, SettingError
from .formats.image import DEFAULT_CHANNEL_ORDER, check_channel_order
from .geometry import tight_box

__all__ = ["FaceSmoother", "FaceTracker", "OneEuroFilter", "StreamError", "TrackedFace", "VideoFrame", "box_iou"]

MAX_REDETECT_EVERY = 1_000_000  # frames, as asmnet predict --redetect-every takes them
MAX_MIN_SIZE = 100_000.0  # pixels


class StreamError(DataError, ValueError):
    """Frames that cannot be one video stream: a timestamp that does not increase, a frame of
    another size without :meth:`FaceTracker.reset`, or a second thread calling ``update`` while
    one is in it (a tracker follows one stream: use one FaceTracker per stream)."""


def _number(name: str, value: Any, low: float, high: float, low_open: bool = False) -> float:
    """``value`` as a float when it is a finite number in [low, high] ((low, high] with
    ``low_open``); SettingError naming the setting otherwise."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not low <= value <= high or (low_open and value == low):
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise SettingError(None, f"{name} must be a finite number in {span}, got {value!r}")
    return float(value)


def _switch(name: str, value: Any) -> bool:
    """``value`` when it is True or False; SettingError otherwise ("no" or 0.5 would mean on)."""
    if not isinstance(value, (bool, np.bool_)):
        raise SettingError(None, f"{name} must be True or False, got {value!r}")
    return bool(value)


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    """Smoothing factor of a first-order low-pass with ``cutoff`` Hz sampled ``dt`` s apart."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The 1€ filter (Casiez, Roussel & Vogel, CHI 2012), elementwise over an array.

    A first-order low-pass whose cutoff rises with the signal's speed:
    ``cutoff = min_cutoff + beta * |filtered derivative|``. At rest the strong ``min_cutoff``
    smoothing removes jitter; when the signal moves fast the cutoff rises and the lag shrinks.
    Units: ``min_cutoff`` and ``d_cutoff`` in Hz, ``beta`` in 1 / (signal unit per second), so
    ``beta`` depends on the signal's scale (``FaceSmoother`` scales it by the face size).

    ``beta`` (scalar or an array broadcastable to the signal) is a public attribute and may be
    changed between calls. Call with the sample and its timestamp in seconds; the first call (and
    the first after ``reset()``) returns the sample unchanged; a timestamp that does not advance
    (``dt <= 0``) returns the previous output without updating the state.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0:
            raise ValueError(f"cutoffs must be positive, got min_cutoff={min_cutoff}, d_cutoff={d_cutoff}")
        self.min_cutoff = float(min_cutoff)
        self.beta: float | np.ndarray = beta
        self.d_cutoff = float(d_cutoff)
        self._x: np.ndarray | None = None  # previous output
        self._dx: np.ndarray | None = None  # previous filtered derivative
        self._t = 0.0

    def reset(self) -> None:
        """Forget the state: the next call returns its sample unchanged."""
        self._x = self._dx = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter one sample ``x`` (any shape, fixed between calls) taken at time ``t`` (seconds)."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"sample shape {x.shape} differs from the filter's {self._x.shape}; reset() first")
        dt = float(t) - self._t
        if not dt > 0:  # also catches NaN
            return self._x.copy()
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = self._dx + a_d * (dx - self._dx)
        cutoff = self.min_cutoff + np.abs(np.asarray(self.beta, dtype=np.float64)) * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = self._x + a * (x - self._x)
        self._t = float(t)
        return self._x.copy()


def _wrap_degrees(angle: np.ndarray) -> np.ndarray:
    """Angles in degrees wrapped to [-180, 180)."""
    return (np.asarray(angle, dtype=np.float64) + 180.0) % 360.0 - 180.0


class FaceSmoother:
    """Smoothing of one face's landmarks (pixels) and pose (degrees) over time, in the face's frame.

    Each frame's landmarks are split into a similarity motion (where the face is, how large and
    how turned in the image) and a shape (the landmarks with that motion removed):

    * the **motion** ``(a, b, tx, ty)`` (``points = [[a, -b], [b, a]] @ shape + t``; ``a`` and
      ``b`` are the face size times the cosine and sine of its in-plane angle, so all four are
      pixels) goes through one 1€ filter whose cut-off follows the face's speed, measured on all
      four together in *face sizes per second*: ``motion_min_cutoff`` Hz, plus ``motion_beta`` Hz
      for each face size per second above ``motion_noise`` (slower apparent motion is the
      network's jitter). A moving face is therefore followed with almost no smoothing, hence no
      trailing, and a still one is smoothed hard.
    * the **shape** (``N x 2`` in face sizes, in the frame of the track's first landmarks, which
      fixes the angle's zero) goes through a plain 1€ filter (``min_cutoff``, ``beta`` per face
      size per second, ``d_cutoff``): it changes only with expression and out-of-plane turns,
      not when the face pans, zooms or rolls, so its smoothing costs nothing on such motion.

    The face size is that of the landmarks' tight box (its larger side); every speed is in face
    sizes per second and cut-offs are in Hz, so scaling a video by any factor scales the
    smoothed landmarks by that factor exactly (a 100 px face is smoothed like a 400 px one).

    The pose goes through a 1€ filter in degrees (``pose_beta`` in Hz per degree per second);
    angles are unwrapped against the previous output, so a roll crossing +-180 degrees does not
    swing round.

    The landmark defaults were chosen on ``benchmarks/video_smoothing.py`` (validation faces
    warped into moving and still clips at 30 fps; numbers in benchmarks/README.md): on moving
    clips the smoothed landmarks are as close to the truth as the unsmoothed ones (NME 4.54 vs
    4.55 %; the pixel-wise 1€ filter of asmnet <= 0.1.0 trailed: 6.44 %), on still clips the
    frame-to-frame jitter is cut 11.7x (0.425 -> 0.036 px at 120 px faces). Raises SettingError
    (a DataError and a ValueError) for a setting that is not a finite number, a cut-off <= 0 or a
    negative beta or ``motion_noise``.
    """

    def __init__(
        self,
        min_cutoff: float = 0.3,
        beta: float = 4.0,
        d_cutoff: float = 1.0,
        motion_min_cutoff: float = 0.25,
        motion_beta: float = 100.0,
        motion_d_cutoff: float = 1.5,
        motion_noise: float = 0.15,
        pose_min_cutoff: float = 0.3,
        pose_beta: float = 0.02,
        pose_d_cutoff: float = 1.0,
    ):
        for name, value in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff), ("motion_min_cutoff", motion_min_cutoff),
                            ("motion_d_cutoff", motion_d_cutoff), ("pose_min_cutoff", pose_min_cutoff),
                            ("pose_d_cutoff", pose_d_cutoff)):
            _number(name, value, 0.0, 1e6, low_open=True)
        for name, value in (("beta", beta), ("motion_beta", motion_beta), ("pose_beta", pose_beta),
                            ("motion_noise", motion_noise)):
            _number(name, value, 0.0, 1e6)
        self.shape_filter = OneEuroFilter(min_cutoff, beta, d_cutoff)
        self.motion_min_cutoff = float(motion_min_cutoff)
        self.motion_beta = float(motion_beta)
        self.motion_d_cutoff = float(motion_d_cutoff)
        self.motion_noise = float(motion_noise)
        self.pose_filter = OneEuroFilter(pose_min_cutoff, pose_beta, pose_d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new face): the next sample passes unchanged."""
        self.pose_filter.reset()
        self._pose_out: np.ndarray | None = None
        self._reset_landmarks()

    def _reset_landmarks(self) -> None:
        self.shape_filter.reset()
        self._reference: np.ndarray | None = None  # first frame's shape, centred, in face sizes
        self._motion: np.ndarray | None = None  # filtered (a, b, tx, ty)
        self._motion_speed = np.zeros(4)  # its filtered derivative (pixels / s)
        self._t = 0.0

    def _filter_motion(self, motion: np.ndarray, t: float) -> np.ndarray:
        """The 1€ filter on (a, b, tx, ty) with one cut-off from the speed in face sizes per second."""
        if self._motion is None:
            self._motion, self._motion_speed, self._t = motion.copy(), np.zeros(4), t
            return motion
        dt = t - self._t
        if not dt > 0:
            return self._motion
        size = math.hypot(self._motion[0], self._motion[1])
        speed = (motion - self._motion) / dt
        self._motion_speed = self._motion_speed + _alpha(self.motion_d_cutoff, dt) * (speed - self._motion_speed)
        face_speed = float(np.linalg.norm(self._motion_speed)) / max(size, 1e-9)
        face_speed = max(0.0, face_speed - self.motion_noise)  # slower counts as jitter
        a = _alpha(self.motion_min_cutoff + self.motion_beta * face_speed, dt)
        self._motion = self._motion + a * (motion - self._motion)
        self._t = t
        return self._motion

    def smooth_landmarks(self, landmarks: np.ndarray, t: float) -> np.ndarray:
        """Smoothed landmarks (N, 2) in pixels at time ``t`` (seconds); non-finite or degenerate
        landmarks pass unchanged and restart the history."""
        pts = np.asarray(landmarks, dtype=np.float64)
        centre = pts.mean(axis=0) if pts.size else np.zeros(2)
        offsets = pts - centre
        if pts.ndim != 2 or len(pts) < 2 or not np.all(np.isfinite(pts)) or not np.any(offsets):
            self._reset_landmarks()
            return pts.copy()
        first = self._reference is None or self._reference.shape != pts.shape
        if first:
            self._reset_landmarks()
            box = tight_box(pts)
            self._reference = offsets / max(float(box[2] - box[0]), float(box[3] - box[1]))
        ref = self._reference
        # Least-squares similarity reference -> points: a, b from the centred correlation.
        norm = float((ref**2).sum())
        a = float((ref * offsets).sum()) / norm
        b = float((ref[:, 0] * offsets[:, 1] - ref[:, 1] * offsets[:, 0]).sum()) / norm
        motion = self._filter_motion(np.array([a, b, centre[0], centre[1]]), float(t))
        rot = np.array([[a, -b], [b, a]])
        shape = offsets @ np.linalg.inv(rot).T  # this frame's shape in the reference's frame
        shape = self.shape_filter(shape, t)
        if first:  # the first sample passes unchanged (exactly, not through the round trip)
            return pts.copy()
        ma, mb = motion[0], motion[1]
        return shape @ np.array([[ma, -mb], [mb, ma]]).T + motion[2:]

    def smooth_pose(self, pose: np.ndarray, t: float) -> np.ndarray:
        """Smoothed (yaw, pitch, roll) in degrees, wrapped to [-180, 180), at time ``t``."""
        angles = np.asarray(pose, dtype=np.float64)
        if self._pose_out is not None and angles.shape == self._pose_out.shape:
            angles = self._pose_out + _wrap_degrees(angles - self._pose_out)  # nearest turn
        elif self._pose_out is not None:
            self.pose_filter.reset()
        self._pose_out = self.pose_filter(angles, t)
        return _wrap_degrees(self._pose_out)

    def smooth(self, landmarks: np.ndarray, pose: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed landmarks (N, 2) in pixels and pose (3,) in degrees at time ``t`` (seconds)."""
        return self.smooth_landmarks(landmarks, t), self.smooth_pose(pose, t)

    def __call__(self, face: Face, t: float) -> Face:
        """A copy of ``face`` with smoothed landmarks and pose (box, score and quality as given)."""
        landmarks, pose = self.smooth(face.landmarks, face.pose, t)
        return replace(face, landmarks=landmarks, pose=pose)


@dataclass
class TrackedFace:
    """One tracked face in one frame.

    ``id``: the track's integer id, stable while the face is tracked (ids are never reused by a
    tracker). ``face``: the output, a :class:`~asmnet.Face` whose landmarks and pose are smoothed
    over the track's history (the same as ``raw`` when the tracker does not smooth); its ``box``
    is the tight box of those landmarks, ``detector_box`` the detector's box on frames where the
    detector found this face (else None), ``score`` the detector score of the track's latest
    detection, ``quality``/``flagged`` this frame's. ``raw``: this frame's unsmoothed aligner
    output. ``age``: frames since the track started (0 on its first frame). ``detected``: whether
    this frame's result came from the detector rather than from tracking.
    """

    id: int
    face: Face
    raw: Face
    age: int = 0
    detected: bool = False

    @property
    def landmarks(self) -> np.ndarray:
        """``face.landmarks``: (N, 2) smoothed landmarks in pixels."""
        return self.face.landmarks

    @property
    def pose(self) -> np.ndarray:
        """``face.pose``: smoothed (yaw, pitch, roll) in degrees."""
        return self.face.pose

    @property
    def box(self) -> np.ndarray:
        """``face.box``: the tight box (x1, y1, x2, y2) of the smoothed landmarks."""
        return self.face.box


@dataclass
class VideoFrame:
    """One frame of :meth:`FaceTracker.track`: its index (0-based), timestamp in seconds, the
    image as decoded (BGR, OpenCV's order) and the faces tracked in it (sorted by id)."""

    index: int
    timestamp: float
    image: np.ndarray
    faces: list[TrackedFace]

    def __repr__(self) -> str:
        """One line per face at most (the frame's pixels are in ``image``)."""
        h, w = self.image.shape[:2]
        return f"VideoFrame(index={self.index}, timestamp={self.timestamp:.3f}, {w}x{h} image, faces={self.faces!r})"


@dataclass(eq=False)
class _Track:
    """A tracker's state for one face."""

    id: int
    face: Face  # latest usable raw result
    score: float
    smoother: FaceSmoother | None
    age: int = 0

    @property
    def box(self) -> np.ndarray:
        """The reference box for the next frame: tight box of the latest raw landmarks."""
        return tight_box(self.face.landmarks)


class FaceTracker:
    """Faces in video: detect now and then, follow each face from frame to frame with its
    landmarks, smooth each track over time (MediaPipe's VIDEO / LIVE_STREAM modes).

    Example::

        >>> from asmnet import FaceTracker
        >>> tracker = FaceTracker(model="default")           # doctest: +SKIP  (FaceAligner options), or
        >>> tracker = FaceTracker(FaceAligner(), redetect_every=15)          # doctest: +SKIP
        >>> for frame in tracker.track("clip.mp4"):          # doctest: +SKIP
        ...     for face in frame.faces:                     # TrackedFace
        ...         face.id, face.landmarks, face.pose, face.box
        >>> faces = tracker.update(frame_bgr, timestamp_s)   # doctest: +SKIP

    ``aligner``: the :class:`~asmnet.FaceAligner` to use; without one, the keyword arguments the
    tracker does not take itself build one (``model``, ``detector``, ``threads``, ``min_score``,
    ...). ``smooth``: smooth each track with a :class:`FaceSmoother` built from
    ``smoother_options`` (its defaults when empty). :meth:`update` takes one frame and its
    timestamp; :meth:`track` reads a video file or camera and yields :class:`VideoFrame` objects.

    Each tracked face's next reference box is the tight box of its previous (raw, unsmoothed)
    landmarks, the model's own box convention; all tracks go through the aligner in ONE batched
    ``aligner(frame, boxes=[...], channel_order="bgr")`` call per frame. The detector
    (``aligner(frame, channel_order="bgr")``) runs on the first frame, ``redetect_every`` frames
    after the previous detection (0: never on a schedule), whenever a track is lost on this frame
    and, with ``detect_when_empty``, on every frame without tracks (so a face entering an empty
    scene is found at once). On a detection frame, a detection that overlaps a track's previous
    box (IoU >= ``iou_match``, greedy by IoU) becomes that track's result; tracks no detection
    claims are tracked as usual.

    A track is lost when its tracked result is flagged (``face.flagged``: the shape is
    implausible, as when tracking slid off the face), not finite, its landmarks' tight box is
    smaller than ``min_size`` pixels (larger side) or has less than ``min_visible`` of its area
    inside the frame. A lost track triggers a detection on the same frame; a detection
    overlapping its last good box (IoU >= ``iou_match``) revives it under the same id, otherwise
    it ends. Detections pass the same test except the flag (the detector vouches that a face is
    there, so a hard face the aligner flags is still returned, flagged, as in photos: it is then
    detected on every frame); those that fail it, or overlap a current track (IoU >=
    ``iou_match``), start no track; the others start new tracks with fresh ids and smoothers.
    When two tracks drift onto one face (IoU >= ``iou_match``) the younger one ends.

    ``update`` returns ``TrackedFace`` objects (``id`` plus a ``Face``; see its docstring), sorted
    by id. Lost tracks are not returned. ``detector_runs`` and ``tracking_runs`` count the two
    kinds of aligner call, ``frame_index`` the frames seen.

    **One tracker per stream.** A tracker holds one video's tracks and clock; frames of two
    streams would merge into one set of tracks. So ``update`` raises :class:`StreamError` (a
    DataError and a ValueError) when a second thread calls it while one is in it, when a
    timestamp does not increase, and when the frame size changes without :meth:`reset`; frames
    of one stream may still come from several threads in turn. Settings are checked here:
    SettingError (a DataError and a ValueError) for one of the wrong type or out of range
    (``redetect_every`` 0..1,000,000, ``iou_match`` in (0, 1], ``min_size`` in [0, 100000],
    ``min_visible`` in [0, 1], ``smoother_options`` those of :class:`FaceSmoother`).
    """

    def __init__(
        self,
        aligner: FaceAligner | None = None,
        *,
        redetect_every: int = 30,
        smooth: bool = True,
        smoother_options: dict[str, float] | None = None,
        iou_match: float = 0.3,
        min_size: float = 16.0,
        min_visible: float = 0.5,
        detect_when_empty: bool = True,
        **aligner_options: Any,
    ):
        if aligner is not None and aligner_options:
            raise SettingError(None, f"pass either an aligner or FaceAligner options, not both (got {sorted(aligner_options)})")
        if not (isinstance(redetect_every, (int, np.integer)) and not isinstance(redetect_every, bool)
                and 0 <= redetect_every <= MAX_REDETECT_EVERY):
            raise SettingError(None, f"redetect_every must be a whole number in 0..{MAX_REDETECT_EVERY} "
                               f"(0: only when a track is lost), got {redetect_every!r}")
        self.redetect_every = int(redetect_every)
        self.smooth = _switch("smooth", smooth)
        self.detect_when_empty = _switch("detect_when_empty", detect_when_empty)
        self.iou_match = _number("iou_match", iou_match, 0.0, 1.0, low_open=True)
        self.min_size = _number("min_size", min_size, 0.0, MAX_MIN_SIZE)
        self.min_visible = _number("min_visible", min_visible, 0.0, 1.0)
        self.smoother_options = self._smoother_options(smoother_options)
        self.aligner = aligner if aligner is not None else FaceAligner(**aligner_options)
        if isinstance(self.aligner, FaceAligner) and self.aligner.detector is None:
            raise SettingError(None, "the tracker's aligner has no detector (detector=None): tracking starts from detections")
        self._lock = threading.Lock()  # held by the update in progress (see "One tracker per stream")
        self._frame_size: tuple[int, int] | None = None  # this stream's (height, width)
        self.detector_runs = 0
        self.tracking_runs = 0
        self.frame_index = 0
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._since_detection: int | None = None
        self._last_t: float | None = None

    @staticmethod
    def _smoother_options(options: Any) -> dict[str, float]:
        """``smoother_options`` checked by building a FaceSmoother with them (SettingError)."""
        if options is None:
            return {}
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            raise SettingError(None, f"smoother_options must be a dict of FaceSmoother settings, got {options!r}")
        try:
            FaceSmoother(**options)  # bad options fail here, not on the first face
        except TypeError as exc:  # an unknown setting
            raise SettingError(None, f"smoother_options: {exc}") from None
        return dict(options)

    @property
    def track_ids(self) -> list[int]:
        """Ids of the faces tracked now."""
        return [tr.id for tr in self._tracks]

    def reset(self) -> None:
        """Drop all tracks (a new video: timestamps may start again); counters and ids continue."""
        self._tracks = []
        self._since_detection = None
        self._last_t = None
        self._frame_size = None

    def _usable(self, face: Face, width: int, height: int, detected: bool = False) -> bool:
        """Whether a result can carry a track (see the class docstring); the flag counts only
        against results of tracking, not of the detector."""
        pts = np.asarray(face.landmarks, dtype=np.float64)
        if (face.flagged and not detected) or pts.size == 0 or not np.all(np.isfinite(pts)):
            return False
        box = tight_box(pts)
        w, h = float(box[2] - box[0]), float(box[3] - box[1])
        if max(w, h) < self.min_size or w <= 0 or h <= 0:
            return False
        iw = min(box[2], width - 0.5) - max(box[0], -0.5)
        ih = min(box[3], height - 0.5) - max(box[1], -0.5)
        visible = max(iw, 0.0) * max(ih, 0.0) / (w * h)
        return visible >= self.min_visible

    def _detect(self, frame: np.ndarray, width: int, height: int, channel_order: str) -> list[Face]:
        """Run the detector (+ alignment); the usable detections."""
        faces = self.aligner(frame, channel_order=channel_order)
        self.detector_runs += 1
        self._since_detection = 0
        return [f for f in faces if self._usable(f, width, height, detected=True)]

    def _match(self, faces: list[Face], boxes: list[np.ndarray]) -> list[tuple[int, int]]:
        """Greedy one-to-one (face index, box index) pairs by IoU >= ``iou_match``."""
        if not faces or not boxes:
            return []
        iou = np.array([[box_iou(tight_box(f.landmarks), b) for b in boxes] for f in faces])
        pairs = []
        while True:
            i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
            if iou[i, j] < self.iou_match:
                return pairs
            pairs.append((int(i), int(j)))
            iou[i, :] = -1.0
            iou[:, j] = -1.0

    def _new_track(self, face: Face) -> _Track:
        smoother = FaceSmoother(**self.smoother_options) if self.smooth else None
        track = _Track(self._next_id, face, float(face.score), smoother, age=-1)
        self._next_id += 1
        return track

    def update(self, frame: np.ndarray, timestamp: float, channel_order: str = DEFAULT_CHANNEL_ORDER
               ) -> list[TrackedFace]:
        """The faces in the next frame of a video: a list of :class:`TrackedFace`, sorted by id.

        ``frame``: an image array, BGR by default (as OpenCV decodes video; ``channel_order="rgb"``
        otherwise; gray and BGRA work too): the rule of :class:`~asmnet.FaceAligner`.
        ``timestamp``: when the frame was taken, in seconds; it must increase from frame to frame
        (the smoothing works in real time, so a 60 fps video is smoothed like a 30 fps one) until
        :meth:`reset`. Raises DataError for a frame that is not an image, SettingError for a bad
        ``channel_order``, :class:`StreamError` (a DataError and a ValueError) for frames that
        cannot be this tracker's one stream: a timestamp that does not increase, a frame of another
        size without :meth:`reset`, a call while another thread is in ``update``.
        """
        check_channel_order(channel_order)
        frame = np.asarray(frame)
        if frame.ndim not in (2, 3) or frame.shape[0] == 0 or frame.shape[1] == 0:
            raise DataError(None, f"a video frame must be an image array (H, W) or (H, W, C), got shape {frame.shape}")
        if not self._lock.acquire(blocking=False):
            raise StreamError(None, "FaceTracker.update was called while another thread is in it: a tracker follows "
                              "one video stream (use one FaceTracker per stream)")
        try:
            t = self._next_time(timestamp)
            size = (int(frame.shape[0]), int(frame.shape[1]))
            if self._frame_size is not None and size != self._frame_size:
                raise StreamError(None, f"frame size changed from {self._frame_size[1]}x{self._frame_size[0]} to "
                                  f"{size[1]}x{size[0]} without reset(): another stream? (use one FaceTracker per "
                                  "stream, or call reset() for a new video)")
            out = self._update(frame, t, channel_order)
            self._frame_size = size
            return out
        finally:
            self._lock.release()

    def _next_time(self, timestamp: Any) -> float:
        """``timestamp`` in seconds; StreamError unless it is finite and after the previous one."""
        try:
            t = float(timestamp)
        except (TypeError, ValueError):
            raise StreamError(None, f"a timestamp must be a number of seconds, got {timestamp!r}") from None
        if not math.isfinite(t) or (self._last_t is not None and not t > self._last_t):
            raise StreamError(None, f"timestamps must be finite and increase from frame to frame, got {timestamp} "
                              f"after {self._last_t} (one FaceTracker per stream; reset() for a new video)")
        return t

    def _update(self, frame: np.ndarray, t: float, channel_order: str) -> list[TrackedFace]:
        """:meth:`update` of a checked frame and time, under the lock."""
        height, width = frame.shape[:2]
        due = (
            self._since_detection is None
            or (self.redetect_every > 0 and self._since_detection >= self.redetect_every)
            or (self.detect_when_empty and not self._tracks)
        )
        results: dict[int, Face] = {}
        detected: set[int] = set()
        detections: list[Face] | None = None
        used: set[int] = set()

        def claim(tracks: list[_Track]) -> None:
            """Give unused detections to the tracks whose previous boxes they overlap."""
            free = [i for i in range(len(detections or [])) if i not in used]
            pairs = self._match([detections[i] for i in free], [tr.box for tr in tracks])
            for i, j in pairs:
                used.add(free[i])
                results[tracks[j].id] = detections[free[i]]
                detected.add(tracks[j].id)

        if due:
            detections = self._detect(frame, width, height, channel_order)
            claim(self._tracks)
        pending = [tr for tr in self._tracks if tr.id not in results]
        if pending:
            faces = self.aligner(frame, boxes=np.stack([tr.box for tr in pending]), channel_order=channel_order)
            self.tracking_runs += 1
            if len(faces) != len(pending):
                raise RuntimeError(f"the aligner returned {len(faces)} faces for {len(pending)} boxes")
            results.update({tr.id: f for tr, f in zip(pending, faces)})

        alive = [tr for tr in self._tracks if self._usable(results[tr.id], width, height, tr.id in detected)]
        lost = [tr for tr in self._tracks if tr not in alive]
        if lost:
            if detections is None:
                detections = self._detect(frame, width, height, channel_order)
            for tr in lost:
                results.pop(tr.id)
            claim(lost)
            alive += [tr for tr in lost if tr.id in results]
        alive.sort(key=lambda tr: tr.id)

        # Drop the younger of two tracks that drifted onto one face, then start new tracks.
        kept: list[_Track] = []
        for tr in alive:
            box = tight_box(results[tr.id].landmarks)
            if all(box_iou(box, tight_box(results[k.id].landmarks)) < self.iou_match for k in kept):
                kept.append(tr)
        for i, face in enumerate(detections or []):
            box = tight_box(face.landmarks)
            if i in used or any(box_iou(box, tight_box(results[k.id].landmarks)) >= self.iou_match
                                for k in kept):
                continue
            track = self._new_track(face)
            results[track.id] = face
            detected.add(track.id)
            kept.append(track)
        self._tracks = kept

        out = []
        for tr in self._tracks:
            raw = results[tr.id]
            tr.face, tr.age = raw, tr.age + 1
            if tr.id in detected:
                tr.score = float(raw.score)
            shown = tr.smoother(raw, t) if tr.smoother is not None else raw
            # box: the smoothed landmarks' tight box; detector_box only where detected this frame
            shown = replace(shown, box=tight_box(shown.landmarks), score=tr.score,
                            detector_box=raw.detector_box if tr.id in detected else None)
            out.append(TrackedFace(tr.id, shown, raw, tr.age, tr.id in detected))
        self.frame_index += 1
        self._last_t = t
        if self._since_detection is not None:
            self._since_detection += 1
        return out

    def track(self, source: str | Path | int, max_frames: int | None = None,
              max_pixels: int | None = None) -> Iterator[VideoFrame]:
        """Track faces through a video file (a path) or a camera (an int index, as OpenCV numbers
        them): yields one :class:`VideoFrame` per decoded frame, until the video ends or after
        ``max_frames``. Starts with :meth:`reset`. Timestamps are ``index / fps`` for files (30 fps
        when the file does not say) and seconds since the first frame for cameras. Raises
        DataError when the source cannot be opened or its frames are over ``max_pixels`` (default:
        the limit of images, $ASMNET_MAX_PIXELS; checked before the first frame is decoded); a
        video that stops early (corrupt, truncated) simply ends.
        """
        import cv2

        from .formats.video import check_frame, open_video

        cap = open_video(source, max_pixels)
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
            self.reset()
            index, start = 0, time.monotonic()
            while max_frames is None or index < max_frames:
                ok, image = cap.read()
                if not ok or image is None:
                    return
                check_frame(image, source, max_pixels)
                t = time.monotonic() - start if isinstance(source, int) else index / fps
                if self._last_t is not None and not t > self._last_t:  # a camera clock that stalls
                    t = self._last_t + 1e-6
                yield VideoFrame(index, t, image, self.update(image, t))
                index += 1
        finally:
            cap.release()
