"""Video: the one-euro filter, face smoothing and the detect-then-track tracker (no model needed).

The tracker runs against a fake aligner that knows where the synthetic faces are and records
whether it was asked to detect or given boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest
from conftest import template_face

from asmnet.api import Face
from asmnet.geometry import tight_box
from asmnet.video import FaceSmoother, FaceTracker, OneEuroFilter, TrackedFace, box_iou

FPS = 30.0


def run_filter(filt, samples: np.ndarray) -> np.ndarray:
    """Feed samples (T, ...) at FPS, return the outputs (T, ...)."""
    return np.array([filt(x, i / FPS) for i, x in enumerate(samples)])


def ramp(speed: float, n_still: int = 30, n_move: int = 60) -> np.ndarray:
    """Still for n_still frames, then constant speed (units per second)."""
    t = np.arange(n_still + n_move) / FPS
    return np.where(t < n_still / FPS, 0.0, speed * (t - n_still / FPS))


def steady_lag_ms(filt, speed: float, width: int = 1) -> float:
    """Lag in milliseconds of a filter following a ramp, over its last half second."""
    true = ramp(speed)
    out = run_filter(filt, np.repeat(true[:, None], width, 1))
    return float((true[-15:, None] - out[-15:]).mean() / speed * 1000.0)


# ----------------------------------------------------------------------------------------- OneEuroFilter


def test_one_euro_first_call_dt_and_reset():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    x0 = np.array([1.0, 2.0])
    np.testing.assert_array_equal(f(x0, 0.0), x0)
    y1 = f(np.array([3.0, 0.0]), 0.1)
    assert np.all(y1 != x0) and np.all(np.abs(y1 - x0) < np.abs([2.0, 2.0]))
    np.testing.assert_array_equal(f(np.array([100.0, 100.0]), 0.1), y1)  # dt = 0: previous output
    np.testing.assert_array_equal(f(np.array([100.0, 100.0]), 0.05), y1)  # dt < 0 too
    with pytest.raises(ValueError):
        f(np.zeros(3), 0.2)
    f.reset()
    np.testing.assert_array_equal(f(np.array([5.0, 6.0]), 0.0), [5.0, 6.0])
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)


def test_one_euro_removes_jitter_of_a_constant():
    rng = np.random.default_rng(0)
    noisy = 3.0 + rng.normal(0.0, 0.005, (600, 136))
    # Plain low-pass at 1 Hz, 30 fps: EMA alpha 0.173, std ratio sqrt(a / (2 - a)) = 0.31.
    plain = run_filter(OneEuroFilter(1.0, 0.0), noisy)[60:]
    assert noisy[60:].std() / plain.std() > 3.0
    assert abs(plain.mean() - 3.0) < 1e-3
    # The landmark defaults (in face sizes): measured 4.0x less jitter.
    tuned = run_filter(OneEuroFilter(0.3, 4.0, 1.0), noisy)[60:]
    assert noisy[60:].std() / tuned.std() > 3.5


def test_one_euro_ramp_lag():
    # Without beta the lag of a ramp is the low-pass time constant 1 / (2 pi fc) = 159 ms at 1 Hz.
    assert steady_lag_ms(OneEuroFilter(1.0, 0.0), 2.0) == pytest.approx(1000 / (2 * np.pi), abs=2.0)
    # With the landmark defaults the cutoff rises with speed: measured 14 ms at 2 units/s, 36 ms
    # at 0.5 units/s (face sizes per second for FaceSmoother).
    assert steady_lag_ms(OneEuroFilter(0.3, 4.0, 1.0), 2.0) < 20.0
    assert steady_lag_ms(OneEuroFilter(0.3, 4.0, 1.0), 0.5) < 45.0


# ------------------------------------------------------------------------------------------ FaceSmoother


def face_track(size: float, n: int = 240, sigma: float = 0.005, speed: float = 2.0, accel: float = 0.0,
               angle_speed: float = 0.0, seed: int = 0):
    """Landmarks (n, 68, 2) of a face of ``size`` px with i.i.d. jitter ``sigma`` (face sizes) per
    point, still for the first half, then moving right at ``speed`` face sizes per second plus
    ``accel`` face sizes per second squared, turning at ``angle_speed`` degrees per second; and
    the true track."""
    rng = np.random.default_rng(seed)
    shape = (template_face() - 0.5) * size
    t = np.arange(n) / FPS
    moving = np.maximum(t - t[n // 2], 0.0)
    shift = (speed * moving + 0.5 * accel * moving**2) * size
    angle = np.deg2rad(angle_speed * moving)
    true = []
    for dx, a in zip(shift, angle):
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        true.append(shape @ rot.T + [2.0 * size + dx, 1.5 * size])
    true = np.array(true)
    return true + rng.normal(0.0, sigma * size, true.shape), true


def smooth_landmarks(smoother: FaceSmoother, frames: np.ndarray) -> np.ndarray:
    return np.array([smoother.smooth(p, np.zeros(3), i / FPS)[0] for i, p in enumerate(frames)])


def step_jitter(track: np.ndarray) -> float:
    """Mean frame-to-frame motion of the points (the benchmark's jitter)."""
    return float(np.linalg.norm(np.diff(track, axis=0), axis=-1).mean())


def point_error(track: np.ndarray, true: np.ndarray) -> float:
    return float(np.linalg.norm(track - true, axis=-1).mean())


@pytest.mark.parametrize("motion", [dict(speed=1.0), dict(speed=0.0, accel=3.0), dict(speed=0.5, angle_speed=90.0)])
def test_face_smoother_follows_motion_and_removes_jitter_at_rest(motion):
    size = 120.0
    noisy, true = face_track(size, **motion)
    out = smooth_landmarks(FaceSmoother(), noisy)
    still, moving = slice(30, 120), slice(125, 240)
    # At rest: the frame-to-frame jitter is cut by more than 4x (the target).
    assert step_jitter(noisy[still]) / step_jitter(out[still]) > 4.0
    # Moving (constant velocity, accelerating, turning): the smoothed points are no farther from
    # the truth than the raw ones (the shape noise is still removed; the motion is not trailed).
    assert point_error(out[moving], true[moving]) < point_error(noisy[moving], true[moving])
    # and the mean lag along the motion stays under 0.5 % of the face size
    lag = (true[moving] - out[moving]).mean(axis=(0, 1))
    assert np.abs(lag).max() < 0.005 * size


def test_old_pixel_smoothing_trails_where_the_face_aligned_one_does_not():
    # The pixel-wise 1-euro filter of asmnet <= 0.1.0 (0.3 Hz, beta 4 per face size) on the same
    # track lags by several % of the face size: what the face-aligned smoother fixes.
    size = 120.0
    noisy, true = face_track(size, speed=1.0)
    old = run_filter(OneEuroFilter(0.3, 4.0 / size, 1.0), noisy.reshape(len(noisy), -1)).reshape(noisy.shape)
    new = smooth_landmarks(FaceSmoother(), noisy)
    moving = slice(125, 240)
    assert point_error(old[moving], true[moving]) > 2.0 * point_error(new[moving], true[moving])


def test_face_smoother_is_resolution_independent():
    outs, ratios = [], []
    for size in (60.0, 120.0, 480.0):
        noisy, true = face_track(size)
        out = smooth_landmarks(FaceSmoother(), noisy)
        still = slice(30, 120)
        ratios.append(step_jitter(noisy[still]) / step_jitter(out[still]))
        outs.append((out - true) / size)
    # Same relative behaviour: identical errors in face-size units, identical jitter reduction.
    for other, ratio in zip(outs[1:], ratios[1:]):
        np.testing.assert_allclose(other, outs[0], atol=1e-9)
        assert ratio == pytest.approx(ratios[0], rel=1e-9)


def test_face_smoother_reset_and_bad_input():
    smoother = FaceSmoother()
    pts = (template_face() - 0.5) * 100.0 + 200.0
    first = smoother.smooth_landmarks(pts, 0.0)
    np.testing.assert_array_equal(first, pts)  # the first sample passes exactly
    moved = smoother.smooth_landmarks(pts + [1.0, 0.0], 1 / FPS)
    assert 0.0 < moved[:, 0].mean() - pts[:, 0].mean() < 1.0  # smoothed
    smoother.reset()
    np.testing.assert_array_equal(smoother.smooth_landmarks(pts + 50.0, 2 / FPS), pts + 50.0)
    # A non-finite or degenerate sample passes unchanged and restarts the history.
    bad = pts.copy()
    bad[3] = np.nan
    assert np.isnan(smoother.smooth_landmarks(bad, 3 / FPS)[3]).all()
    np.testing.assert_array_equal(smoother.smooth_landmarks(pts, 4 / FPS), pts)
    np.testing.assert_array_equal(smoother.smooth_landmarks(np.ones((68, 2)), 5 / FPS), np.ones((68, 2)))
    # A different number of points starts afresh too.
    np.testing.assert_array_equal(smoother.smooth_landmarks(pts[:5], 6 / FPS), pts[:5])
    # A timestamp that does not advance returns the previous output.
    smoother.reset()
    smoother.smooth_landmarks(pts, 0.0)
    out = smoother.smooth_landmarks(pts + 3.0, 0.1)
    np.testing.assert_allclose(smoother.smooth_landmarks(pts + 9.0, 0.1), out)
    with pytest.raises(ValueError):
        FaceSmoother(motion_min_cutoff=0.0)
    with pytest.raises(ValueError):
        FaceSmoother(beta=-1.0)


def test_face_smoother_pose_and_face_call():
    rng = np.random.default_rng(1)
    n = 240
    t = np.arange(n) / FPS
    yaw = np.where(t < t[n // 2], 10.0, 10.0 + 200.0 * (t - t[n // 2]))  # still, then 200 deg/s
    pose = np.stack([yaw, np.full(n, -5.0), np.zeros(n)], 1) + rng.normal(0.0, 1.0, (n, 3))
    smoother = FaceSmoother()
    pts = template_face() * 100
    out = np.array([smoother.smooth(pts, p, i / FPS)[1] for i, p in enumerate(pose)])
    still = slice(30, 120)
    assert pose[still, 1].std() / out[still, 1].std() > 3.0  # measured 4.0x for 1 degree jitter
    # Settled lag at 200 deg/s (yaw unwrapped, the output wraps to [-180, 180)): measured 23 ms.
    lag_deg = np.mean(((yaw[-15:] - out[-15:, 0]) + 180.0) % 360.0 - 180.0)
    assert 0.0 < lag_deg / 200.0 * 1000.0 < 35.0
    # Roll crossing +-180 degrees does not swing through 0.
    smoother.reset()
    rolls = [smoother.smooth(pts, [0.0, 0.0, r], i / FPS)[1][2] for i, r in enumerate([178.0, -178.0, -176.0])]
    assert all(abs(abs(r) - 180.0) < 5.0 for r in rolls)
    # The Face interface keeps box, score and quality.
    smoother.reset()
    face = Face(np.array([1.0, 2.0, 3.0, 4.0]), 0.7, pts, np.array([1.0, 2.0, 3.0]), 0.02)
    out_face = smoother(face, 0.0)
    np.testing.assert_array_equal(out_face.landmarks, pts)
    assert out_face.score == 0.7 and out_face.quality == 0.02 and out_face.box is face.box


# ------------------------------------------------------------------------------------------- FaceTracker

H, W = 240, 320


@dataclass
class FakeAligner:
    """Stands in for FaceAligner: knows the true faces of the current frame (``truth``: a list of
    (landmarks, flagged)), records detection frames and the boxes it was given."""

    truth: list = field(default_factory=list)
    frame: int = 0
    flag_boxes_at: set = field(default_factory=set)  # frames whose box results come out flagged
    detect_frames: list = field(default_factory=list)
    box_calls: list = field(default_factory=list)  # (frame, boxes (K, 4))

    def __call__(self, image, boxes=None, channel_order="rgb"):
        assert channel_order == "bgr" and image.shape == (H, W, 3)
        if boxes is None:
            self.detect_frames.append(self.frame)
            return [Face(tight_box(p) + [-5, -8, 5, 2], 0.9, p.copy(), np.zeros(3), 0.01, flagged)
                    for p, flagged in self.truth]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.box_calls.append((self.frame, boxes))
        out = []
        for box in boxes:
            ious = [box_iou(box, tight_box(p)) for p, _ in self.truth]
            if ious and max(ious) > 0.1:
                p, flagged = self.truth[int(np.argmax(ious))]
                flagged = flagged or self.frame in self.flag_boxes_at
                out.append(Face(box, 1.0, p.copy(), np.zeros(3), 0.01, flagged))
            else:  # nothing there: an implausible shape
                garbage = template_face()[::-1] * (box[2:] - box[:2]) + box[:2]
                out.append(Face(box, 1.0, garbage, np.zeros(3), 0.5, True))
        return out


def face_at(x: float, y: float, size: float = 80.0) -> np.ndarray:
    return template_face() * size + [x, y]


def play(tracker: FaceTracker, fake: FakeAligner, scene, n: int) -> list[list[TrackedFace]]:
    """Run n frames; scene(i) -> the true faces [(landmarks, flagged), ...] of frame i."""
    frame = np.zeros((H, W, 3), np.uint8)
    outputs = []
    for i in range(n):
        fake.frame, fake.truth = i, scene(i)
        outputs.append(tracker.update(frame, i / FPS))
    return outputs


def test_tracker_detects_on_schedule_and_tracks_from_previous_landmarks():
    fake = FakeAligner()
    tracker = FaceTracker(fake, redetect_every=5, smooth=False)
    scene = lambda i: [(face_at(40 + 3 * i, 60), False)]  # noqa: E731
    outputs = play(tracker, fake, scene, 23)
    assert fake.detect_frames == [0, 5, 10, 15, 20] and tracker.detector_runs == 5
    tracked_frames = [f for f, _ in fake.box_calls]
    assert tracked_frames == [i for i in range(23) if i % 5]  # one call per tracking frame
    assert tracker.tracking_runs == len(tracked_frames)
    for f, boxes in fake.box_calls:  # the reference box: tight box of the previous landmarks
        np.testing.assert_allclose(boxes, [tight_box(scene(f - 1)[0][0])])
    assert all(len(out) == 1 and out[0].id == 0 for out in outputs)
    assert [out[0].detected for out in outputs] == [i % 5 == 0 for i in range(23)]
    assert [out[0].age for out in outputs] == list(range(23))
    for i, out in enumerate(outputs):
        np.testing.assert_allclose(out[0].face.landmarks, scene(i)[0][0])
        np.testing.assert_allclose(out[0].face.box, tight_box(scene(i)[0][0]))
        assert out[0].face.score == 0.9  # the detection's score, carried through tracking
    assert tracker.frame_index == 23 and tracker.track_ids == [0]


def test_tracker_two_faces_two_ids_one_batched_call():
    fake = FakeAligner()
    tracker = FaceTracker(fake, redetect_every=10, smooth=False)
    scene = lambda i: [(face_at(20 + i, 40), False), (face_at(200 - i, 120), False)]  # noqa: E731
    outputs = play(tracker, fake, scene, 12)
    assert fake.detect_frames == [0, 10]
    assert all(len(boxes) == 2 for _, boxes in fake.box_calls) and len(fake.box_calls) == 10
    for i, out in enumerate(outputs):
        assert [tf.id for tf in out] == [0, 1]
        np.testing.assert_allclose(out[0].face.landmarks, scene(i)[0][0])
        np.testing.assert_allclose(out[1].face.landmarks, scene(i)[1][0])


def test_tracker_new_face_joins_at_next_detection():
    fake = FakeAligner()
    tracker = FaceTracker(fake, redetect_every=5, smooth=False)
    scene = lambda i: [(face_at(20, 40), False)] + ([(face_at(200, 100), False)] if i >= 3 else [])  # noqa: E731
    outputs = play(tracker, fake, scene, 8)
    assert fake.detect_frames == [0, 5]
    assert [[tf.id for tf in out] for out in outputs] == [[0]] * 5 + [[0, 1]] * 3
    assert outputs[5][1].detected and outputs[5][1].age == 0


def test_tracker_flagged_face_triggers_redetection():
    fake = FakeAligner()
    tracker = FaceTracker(fake, redetect_every=5, smooth=False)
    scene = lambda i: [(face_at(60, 60), i == 7)]  # noqa: E731  the face is implausible on frame 7
    outputs = play(tracker, fake, scene, 14)
    # Tracking flags the face on frame 7: the detector runs at once and finds it (flagged: the
    # detector vouches for it), so the track goes on under its id, flagged on that frame; the
    # schedule restarts from frame 7.
    assert fake.detect_frames == [0, 5, 7, 12]
    assert [[tf.id for tf in out] for out in outputs] == [[0]] * 14
    assert [out[0].face.flagged for out in outputs] == [i == 7 for i in range(14)]
    assert outputs[7][0].detected

    # A face the aligner always flags is tracked too, found by the detector on every frame.
    fake = FakeAligner()
    tracker = FaceTracker(fake, redetect_every=5, smooth=False, detect_when_empty=False)
    outputs = play(tracker, fake, lambda i: [(face_at(60, 60), True)], 6)
    assert fake.detect_frames == list(range(6))
    assert [[tf.id for tf in out] for out in outputs] == [[0]] * 6


def test_tracker_failed_tracking_revives_with_detection():
    fake = FakeAligner(flag_boxes_at={7})  # tracking fails on frame 7, the detector finds the face
    tracker = FaceTracker(fake, redetect_every=30, smooth=False)
    outputs = play(tracker, fake, lambda i: [(face_at(60 + i, 60), False)], 10)
    assert fake.detect_frames == [0, 7]
    assert [[tf.id for tf in out] for out in outputs] == [[0]] * 10
    assert outputs[7][0].detected and outputs[7][0].age == 7


def test_tracker_loses_faces_leaving_the_frame_or_shrinking():
    fake = FakeAligner()
    tracker = FaceTracker(fake, redetect_every=100, smooth=False)
    outputs = play(tracker, fake, lambda i: [(face_at(150 + 20 * i, 60), False)], 9)
    # The landmarks span x = 154 + 20 i .. 226 + 20 i: on frame 7 only 35 % of the box is inside
    # the 320 px frame; the detections on frames 7 and 8 (nothing tracked) are not usable either.
    assert [len(out) for out in outputs] == [1] * 7 + [0] * 2
    assert fake.detect_frames == [0, 7, 8]

    fake = FakeAligner()
    tracker = FaceTracker(fake, redetect_every=100, smooth=False)
    outputs = play(tracker, fake, lambda i: [(face_at(60, 60, size=40.0 - 5 * i), False)], 6)
    assert [len(out) for out in outputs] == [1] * 5 + [0]  # 15 px on frame 5 < min_size 16
    assert fake.detect_frames == [0, 5]


def test_tracker_smooths_per_track_and_resets_on_new_track():
    rng = np.random.default_rng(3)
    truth = {i: face_at(60, 60) + rng.normal(0.0, 0.8, (68, 2)) for i in range(40)}
    fake = FakeAligner()
    tracker = FaceTracker(fake, redetect_every=50)
    outputs = play(tracker, fake, lambda i: [] if i == 20 else [(truth[i], False)], 40)  # gone on frame 20
    assert outputs[20] == [] and outputs[21][0].id == 1
    for i in (0, 21):  # a new track starts from its raw face: no history from the old track
        np.testing.assert_array_equal(outputs[i][0].face.landmarks, outputs[i][0].raw.landmarks)
    still = np.array([out[0].face.landmarks for out in outputs[5:20]])
    raw = np.array([out[0].raw.landmarks for out in outputs[5:20]])
    assert raw.std(axis=0).mean() / still.std(axis=0).mean() > 2.0
    unsmoothed = FaceTracker(FakeAligner(), smooth=False)
    fake2 = unsmoothed.aligner
    out = play(unsmoothed, fake2, lambda i: [(truth[i], False)], 3)
    np.testing.assert_array_equal(out[2][0].face.landmarks, out[2][0].raw.landmarks)


# ------------------------------------------------------------------- the public API on a real face


def astronaut_frames(n: int = 10, step: float = 3.0) -> list[np.ndarray]:
    """scikit-image's astronaut (BGR) moved right by ``step`` px per frame."""
    skdata = pytest.importorskip("skimage.data", reason="the photo comes from scikit-image")
    bgr = np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])
    h, w = bgr.shape[:2]
    return [cv2.warpAffine(bgr, np.float32([[1, 0, step * i], [0, 1, 0]]), (w, h), borderMode=cv2.BORDER_REPLICATE)
            for i in range(n)]


def largest(faces):
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def test_face_box_is_the_landmarks_box_and_detector_box_is_kept():
    from asmnet import FaceAligner

    frame = astronaut_frames(1)[0]
    aligner = FaceAligner()
    face = largest(aligner(frame, channel_order="bgr"))
    np.testing.assert_allclose(face.box, tight_box(face.landmarks))
    assert face.detector_box is not None and face.detector_box.shape == (4,)
    assert face.to_dict()["detector_box"] == [round(float(v), 2) for v in face.detector_box]
    # The box goes back in as boxes= (the same convention): about the same landmarks, no detector box.
    again = aligner(frame, boxes=[face.box], channel_order="bgr")[0]
    assert again.detector_box is None and again.to_dict()["detector_box"] is None
    assert np.abs(again.landmarks - face.landmarks).mean() < 3.0


def test_face_tracker_public_api_on_a_moving_face(tmp_path):
    from asmnet import DataError, FaceTracker, TrackedFace, VideoFrame

    step, frames = 3.0, astronaut_frames(10, 3.0)
    # A FaceAligner() inside; the detector runs on frame 0 (and again only if a false face on the
    # suit, with the detector's default threshold, is tracked and then lost).
    tracker = FaceTracker(redetect_every=0)
    outputs = [tracker.update(frame, i / 30.0) for i, frame in enumerate(frames)]
    main = [largest(out) for out in outputs]
    assert all(isinstance(tf, TrackedFace) for tf in main) and len({tf.id for tf in main}) == 1
    for i, tf in enumerate(main):
        # Tracked landmarks follow the picture (3 px per frame) within a pixel on average (frame 0
        # comes from the detector's box, a different crop); the smoothed ones do not trail them.
        if i >= 1:
            shift = (tf.raw.landmarks - main[1].raw.landmarks).mean(axis=0)
            assert np.abs(shift - [step * (i - 1), 0.0]).max() < 1.0, (i, shift)
        lag = np.abs((tf.landmarks - tf.raw.landmarks).mean(axis=0)).max()
        assert lag < (2.0 if i <= 2 else 1.0), (i, lag)  # frame 1 starts from the detector's crop
        np.testing.assert_allclose(tf.box, tight_box(tf.landmarks))
        assert (tf.face.detector_box is not None) == (i == 0) == tf.detected
    # Frame and timestamp checks.
    with pytest.raises(ValueError, match="increase"):
        tracker.update(frames[0], 9 / 30.0)
    with pytest.raises(DataError):
        tracker.update(np.zeros(5), 1.0)
    with pytest.raises(ValueError, match="either"):
        FaceTracker(tracker.aligner, model="default")

    # The generator over a video file (MJPEG: OpenCV's own writer, always there).
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    got = list(FaceTracker(tracker.aligner).track(path))
    assert all(isinstance(vf, VideoFrame) for vf in got)
    assert [vf.index for vf in got] == list(range(10))
    np.testing.assert_allclose([vf.timestamp for vf in got], np.arange(10) / 10.0)
    assert all(vf.image.shape == frames[0].shape and vf.faces for vf in got)
    assert len({largest(vf.faces).id for vf in got}) == 1
    assert len(list(tracker.track(path, max_frames=3))) == 3  # the same tracker again: reset inside
    with pytest.raises(DataError, match="no such video"):
        next(tracker.track(tmp_path / "missing.mp4"))
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(DataError, match="cannot open"):
        next(tracker.track(tmp_path / "notes.mp4"))
