"""Video smoothing on synthetic moving and still clips built from annotated validation faces.

Each clip warps one validation face (a crop from ``--data``, chosen by ``--keys``) into a 480x360
frame with a similarity transform that changes over time (pan, zoom, rotate, all three; two speeds
each) or stays fixed ("still"); the ground truth moves exactly with the warp. Every frame gets a
little Gaussian noise and a JPEG round trip, so that the network's output jitters as on real
video. Per clip it measures, against the warped ground truth (inter-ocular NME, percent):

* ``frame``: ``FaceAligner`` with its detector on every frame (the detection overlapping the true
  face best, IoU >= 0.3; frames without one count as misses),
* ``raw``: ``FaceTracker`` without smoothing (detect, then follow the landmarks),
* ``old``: the same tracker outputs through the smoother of asmnet <= 0.1.0 (One-Euro on pixels,
  0.3 Hz, beta 4 per face size, derivative cut-off 1 Hz),
* ``new``: ``FaceTracker()`` with its default smoothing.

``old`` is applied to ``raw`` offline, per track: the tracker's raw outputs do not depend on its
smoother (the next box comes from the raw landmarks), so this equals a tracker running that
smoother. On still clips it also reports jitter: the mean distance a point moves from one frame to
the next, in pixels and in % of the face size (the tight box's larger side).

    python benchmarks/video_smoothing.py --data ../shared/data/lfpw_train \\
        --data ../shared/data/udacity_train --keys src/asmnet/models/default/val_keys.txt \\
        --out benchmarks/results/video_smoothing.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine

from asmnet import FaceAligner
from asmnet.detection import box_iou
from asmnet.evaluation import read_keys
from asmnet.fileio import write_text_atomic
from asmnet.formats import key_folder, load_many, read_image
from asmnet.geometry import tight_box
from asmnet.metrics import nme
from asmnet.video import FaceSmoother, FaceTracker, OneEuroFilter

FRAME_W, FRAME_H = 480, 360
PTS_ORIGIN = 1.0  # the shared .pts files: the first pixel's centre is 1.0 (iBUG)
FACE_SIZE = 120.0  # px, the face's larger tight-box side at zoom 1
OLD_SMOOTHER = {"min_cutoff": 0.3, "beta": 4.0, "d_cutoff": 1.0}  # asmnet <= 0.1.0's FaceSmoother


@dataclass(frozen=True)
class Motion:
    """A clip's motion over its duration. ``pan`` in face sizes (x and y amplitude), ``zoom`` the
    largest scale factor, ``rotate`` in degrees, reached along ``profile``:

    * ``"sine"``: sinusoids with ``cycles`` periods per clip, starting at the rest position at top
      speed (so the face moves from the first frame on) and reversing;
    * ``"linear"``: constant speed from the first frame to the last (a slow drift);
    * ``"step"``: still for the first third, a smooth (cosine-eased) move in the middle third,
      still again in the last (onset and stop)."""

    name: str
    pan: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0
    rotate: float = 0.0
    cycles: float = 1.0
    profile: str = "sine"

    def at(self, t: float, duration: float) -> tuple[float, float, float, float]:
        """(dx, dy) in face sizes, scale, angle in degrees at time t."""
        u = t / duration
        if self.profile == "linear":
            f = g = u
        elif self.profile == "step":
            f = g = 0.5 - 0.5 * math.cos(math.pi * min(max(3.0 * u - 1.0, 0.0), 1.0))
        else:
            f = math.sin(2.0 * math.pi * self.cycles * u)
            g = math.sin(4.0 * math.pi * self.cycles * u) / 2.0
        return (self.pan[0] * f, self.pan[1] * g, math.exp(math.log(self.zoom) * f), self.rotate * f)


MOTIONS = [
    Motion("still"),
    Motion("pan-slow", pan=(0.6, 0.0)),
    Motion("pan-fast", pan=(0.9, 0.0), cycles=2.0),
    Motion("zoom-slow", zoom=1.25),
    Motion("zoom-fast", zoom=1.5, cycles=2.0),
    Motion("rotate-slow", rotate=20.0),
    Motion("rotate-fast", rotate=35.0, cycles=2.0),
    Motion("combined-slow", pan=(0.5, 0.3), zoom=1.2, rotate=15.0),
    Motion("combined-fast", pan=(0.8, 0.4), zoom=1.35, rotate=25.0, cycles=2.0),
    Motion("drift", pan=(0.3, 0.15), zoom=1.1, rotate=5.0, profile="linear"),
    Motion("start-stop", pan=(1.0, 0.0), zoom=1.2, rotate=10.0, profile="step"),
]

def make_clip(image: np.ndarray, points0: np.ndarray, motion: Motion, n_frames: int, fps: float,
              rng: np.random.Generator, noise: float, jpeg: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames (BGR) and ground truth (T, N, 2) in 0-based pixel centres (OpenCV's warp convention)."""
    box = tight_box(points0)
    centre = (box[:2] + box[2:]) / 2.0
    k = FACE_SIZE / max(box[2] - box[0], box[3] - box[1])
    frames, truth = [], []
    for i in range(n_frames):
        dx, dy, zoom, angle = motion.at(i / fps, n_frames / fps)
        a = math.radians(angle)
        rot = k * zoom * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        shift = np.array([FRAME_W / 2 + dx * FACE_SIZE, FRAME_H / 2 + dy * FACE_SIZE]) - rot @ centre
        m = np.hstack([rot, shift[:, None]])
        frame = cv2.warpAffine(image, m, (FRAME_W, FRAME_H), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        if noise > 0:
            frame = np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8)
        if jpeg:
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
            frame = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        frames.append(frame)
        truth.append(points0 @ rot.T + shift)
    return frames, np.array(truth)


def origin(aligner: FaceAligner) -> float:
    """The pixel origin of the aligner's outputs (0: OpenCV's, 1: the iBUG annotation files')."""
    return float(aligner.pixel_origin)


def frame_by_frame(aligner: FaceAligner, frames: list[np.ndarray], truth: np.ndarray, org: float,
                   step: int) -> np.ndarray:
    """(T, N, 2) landmarks of the best-matching detection on every ``step``-th frame, NaN where
    none matches and on the frames skipped."""
    out = np.full(truth.shape, np.nan)
    for i, frame in enumerate(frames):
        if i % step:
            continue
        faces = aligner(frame, channel_order="bgr")
        ious = [box_iou(tight_box(f.landmarks - org), tight_box(truth[i])) for f in faces]
        if ious and max(ious) >= 0.3:
            out[i] = faces[int(np.argmax(ious))].landmarks - org
    return out


def track(tracker: FaceTracker, frames: list[np.ndarray], fps: float, truth: np.ndarray, org: float):
    """Tracker outputs (smoothed, raw) (T, N, 2) of the track on the true face (the best IoU with
    the true box, >= 0.3; NaN where none) and that track's id per frame (-1: none)."""
    smoothed, raw = np.full(truth.shape, np.nan), np.full(truth.shape, np.nan)
    ids = np.full(len(frames), -1)
    tracker.reset()
    for i, frame in enumerate(frames):
        out = tracker.update(frame, i / fps)
        ious = [box_iou(tight_box(tf.raw.landmarks - org), tight_box(truth[i])) for tf in out]
        if ious and max(ious) >= 0.3:
            tf = out[int(np.argmax(ious))]
            smoothed[i], raw[i], ids[i] = tf.face.landmarks - org, tf.raw.landmarks - org, tf.id
    return smoothed, raw, ids


class OldSmoother:
    """The landmark smoothing of asmnet <= 0.1.0: a 1€ filter on each pixel coordinate, its
    ``beta`` divided by the face size (larger side of the raw landmarks' box) on every frame."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float):
        self.beta = beta
        self.filter = OneEuroFilter(min_cutoff, beta, d_cutoff)

    def smooth_landmarks(self, pts: np.ndarray, t: float) -> np.ndarray:
        box = tight_box(pts)
        self.filter.beta = self.beta / max(box[2] - box[0], box[3] - box[1])
        return self.filter(pts, t)


def resmooth(raw: np.ndarray, ids: np.ndarray, fps: float, make) -> np.ndarray:
    """``raw`` through a fresh smoother ``make()`` per track id (as the tracker would)."""
    out = np.full(raw.shape, np.nan)
    smoother, current = None, None
    for i in range(len(raw)):
        if ids[i] < 0:
            continue
        if ids[i] != current:
            smoother, current = make(), ids[i]
        out[i] = smoother.smooth_landmarks(raw[i], i / fps)
    return out


def clip_nme(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-frame NME (NaN where the prediction is missing)."""
    ok = np.all(np.isfinite(pred), axis=(1, 2))
    out = np.full(len(pred), np.nan)
    if ok.any():
        out[ok] = nme(pred[ok], truth[ok])
    return out


def jitter(pred: np.ndarray, size: float) -> tuple[float, float]:
    """Mean frame-to-frame point motion: (pixels, % of face size)."""
    step = np.linalg.norm(np.diff(pred, axis=0), axis=-1).mean(axis=1)
    step = step[np.isfinite(step)]
    px = float(step.mean()) if step.size else float("nan")
    return px, px / size * 100.0


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--keys", required=True, help="validation keys: the faces clips are made from")
    ap.add_argument("--faces", type=int, default=8, help="faces per data folder (evenly spread over its keys)")
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--noise", type=float, default=2.0, help="Gaussian noise std per frame (grey levels)")
    ap.add_argument("--jpeg", type=int, default=85, help="JPEG quality per frame (0: none)")
    ap.add_argument("--motions", default=",".join(m.name for m in MOTIONS))
    ap.add_argument("--frame-step", type=int, default=3,
                    help="run the per-frame detector baseline on every N-th frame (it costs ~20x the tracker)")
    ap.add_argument("--no-frame-by-frame", action="store_true", help="skip the per-frame detector baseline")
    ap.add_argument("--dump", help="write the raw tracker and per-frame outputs and the truth to this .npz")
    ap.add_argument("--from-dump", help="re-score a --dump of the same settings with the current smoothers, "
                    "without running the network (the tracker's raw output does not depend on its smoother)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    keys = read_keys(args.keys)
    records, _ = load_many(args.data, n_points=68)
    chosen = []
    for folder in dict.fromkeys(key_folder(r.key) for r in records):
        pool = sorted((r for r in records if r.key in keys and key_folder(r.key) == folder), key=lambda r: r.key)
        step = max(1, len(pool) // args.faces)
        chosen += pool[::step][: args.faces]
    motions = [m for m in MOTIONS if m.name in args.motions.split(",")]
    aligner = FaceAligner(threads=1)
    tracker = FaceTracker(aligner)
    stored = np.load(args.from_dump) if args.from_dump else None
    dump: dict[str, np.ndarray] = {}
    rows = []
    t0 = time.process_time()
    for fi, rec in enumerate(chosen):
        image = read_image(rec.image) if stored is None else None
        points0 = rec.points - PTS_ORIGIN
        for mi, motion in enumerate(motions):
            tag = f"{fi}:{motion.name}"
            if stored is None:
                rng = np.random.default_rng(1000 * fi + mi)
                frames, truth = make_clip(image, points0, motion, args.frames, args.fps, rng, args.noise, args.jpeg)
                org = origin(aligner)
                tracked_new, raw, ids = track(tracker, frames, args.fps, truth, org)
                frame_preds = None if args.no_frame_by_frame else frame_by_frame(aligner, frames, truth, org,
                                                                                 args.frame_step)
            else:
                raw, ids, truth = stored[f"{tag}:raw"], stored[f"{tag}:ids"], stored[f"{tag}:truth"]
                frame_preds = stored[f"{tag}:frame"] if f"{tag}:frame" in stored.files else None
                frames = [None] * len(raw)
            new = resmooth(raw, ids, args.fps, FaceSmoother)
            # The tracker's own smoothing is the smoother on its raw output; frames where they differ
            # (the followed track switched ids, or skipped frames) are counted, expected 0.
            differs = None if stored is None else 0
            if stored is None:
                differs = int((~np.all(np.isclose(tracked_new, new, atol=1e-6, equal_nan=True), axis=(1, 2))).sum())
            preds = {"raw": raw, "old": resmooth(raw, ids, args.fps, lambda: OldSmoother(**OLD_SMOOTHER)), "new": new}
            if frame_preds is not None:
                preds["frame"] = frame_preds
            row = {"key": rec.key, "motion": motion.name, "frames": len(frames), "tracker_differs": differs}
            per_frame = {name: clip_nme(pred, truth) for name, pred in preds.items()}
            # "nme": on the frames where every method has an output (the detector baseline runs on
            # every --frame-step-th frame and can miss; the tracker drops faces the aligner flags).
            # "nme_tracked": the tracker's methods on all frames they share (all frames tracked).
            common = np.all([np.isfinite(v) for v in per_frame.values()], axis=0)
            tracked = np.all([np.isfinite(per_frame[m]) for m in ("raw", "old", "new")], axis=0)
            ran = np.arange(len(frames)) % args.frame_step == 0
            row["common_frames"], row["tracked_frames"] = int(common.sum()), int(tracked.sum())
            for name, pred in preds.items():
                own = tracked if name != "frame" else np.isfinite(per_frame[name])
                row[name] = {"nme": _mean(per_frame[name][common]), "nme_tracked": _mean(per_frame[name][tracked]),
                             "nme_first8": _mean(per_frame[name][:8][own[:8]]),
                             "missing": int(np.isnan(per_frame[name][ran if name == "frame" else slice(None)]).sum())}
                if motion.name == "still":
                    row[name]["jitter_px"], row[name]["jitter_pct"] = jitter(pred, FACE_SIZE)
            rows.append(row)
            if args.dump:
                dump[f"{tag}:raw"], dump[f"{tag}:ids"], dump[f"{tag}:truth"] = raw, ids, truth
                if "frame" in preds:
                    dump[f"{tag}:frame"] = preds["frame"]
            print(f"{rec.key} {motion.name}: " + ", ".join(f"{n} {row[n]['nme']:.2f}" for n in preds), flush=True)
    cpu = time.process_time() - t0

    methods = [m for m in ("frame", "raw", "old", "new") if m in rows[0]]
    summary = {}
    for group, sel in (("moving", lambda r: r["motion"] != "still"), ("still", lambda r: r["motion"] == "still")):
        part = [r for r in rows if sel(r)]
        if not part:
            continue
        summary[group] = {m: {"nme": float(np.nanmean([r[m]["nme"] for r in part])),
                              "nme_tracked": float(np.nanmean([r[m]["nme_tracked"] for r in part])),
                              "nme_first8": float(np.nanmean([r[m]["nme_first8"] for r in part])),
                              "missing_frames": int(sum(r[m]["missing"] for r in part))} for m in methods}
        summary[group]["clips_compared"] = int(sum(r["common_frames"] > 0 for r in part))
        summary[group]["frames_compared"] = int(sum(r["common_frames"] for r in part))
        summary[group]["frames_tracked"] = int(sum(r["tracked_frames"] for r in part))
        if group == "still":
            for m in methods:
                summary[group][m]["jitter_px"] = float(np.nanmean([r[m]["jitter_px"] for r in part]))
                summary[group][m]["jitter_pct"] = float(np.nanmean([r[m]["jitter_pct"] for r in part]))
    by_motion = {mo.name: {m: float(np.nanmean([r[m]["nme"] for r in rows if r["motion"] == mo.name])) for m in methods}
                 for mo in motions}
    result = {
        "settings": {"frame_size": [FRAME_W, FRAME_H], "face_size_px": FACE_SIZE, "frames": args.frames,
                     "fps": args.fps, "noise": args.noise, "jpeg": args.jpeg, "faces": [r.key for r in chosen],
                     "motions": [vars(m) for m in motions], "old_smoother": OLD_SMOOTHER,
                     "new_smoother": "FaceSmoother() defaults (as FaceTracker() smooths)",
                     "from_dump": args.from_dump, "cpu_s": round(cpu, 1)},
        "summary": summary, "by_motion": by_motion, "clips": rows,
    }
    write_text_atomic(Path(args.out), json.dumps(stamp(result), indent=1))
    if args.dump:
        np.savez_compressed(args.dump, **dump)
    print(json.dumps({"summary": summary, "by_motion": by_motion}, indent=1))


if __name__ == "__main__":
    main()
