"""Shared fixtures: the real data folder (optional) and a small synthetic 300W-layout set."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

DATA_DIR = Path(os.environ.get("ASMNET_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def require_data(sub: str = "") -> Path:
    """The shared data folder (or a sub-folder of it); skips the test when it is absent."""
    path = DATA_DIR / sub
    if not path.exists():
        pytest.skip(f"{path} not found: real-data tests need ../shared/data (or ASMNET_DATA)")
    return path


def template_face() -> np.ndarray:
    """A plausible 68-point frontal face in a unit box (jaw, brows, nose, eyes, mouth)."""
    t = np.linspace(-1.0, 1.0, 17)
    jaw = np.stack([0.5 + 0.45 * t, 0.45 + 0.5 * np.sqrt(1 - 0.8 * t**2)], 1)
    brow_l = np.stack([np.linspace(0.15, 0.42, 5), 0.28 - 0.04 * np.sin(np.linspace(0, np.pi, 5))], 1)
    brow_r = brow_l[::-1] * [-1, 1] + [1, 0]
    bridge = np.stack([np.full(4, 0.5), np.linspace(0.38, 0.58, 4)], 1)
    base = np.stack([np.linspace(0.42, 0.58, 5), 0.63 + 0.02 * np.sin(np.linspace(0, np.pi, 5))], 1)
    a = np.linspace(0, 2 * np.pi, 7)[:-1]
    eye_l = np.stack([0.3 - 0.08 * np.cos(a), 0.4 - 0.03 * np.sin(a)], 1)
    eye_r = eye_l[[3, 2, 1, 0, 5, 4]] * [-1, 1] + [1, 0]
    b = np.linspace(0, 2 * np.pi, 13)[:-1]
    outer = np.stack([0.5 - 0.16 * np.cos(b), 0.78 - 0.06 * np.sin(b)], 1)
    c = np.linspace(0, 2 * np.pi, 9)[:-1]
    inner = np.stack([0.5 - 0.1 * np.cos(c), 0.78 - 0.025 * np.sin(c)], 1)
    return np.concatenate([jaw, brow_l, brow_r, bridge, base, eye_l, eye_r, outer, inner])


def write_pts(path: Path, pts: np.ndarray) -> None:
    lines = ["version: 1", f"n_points: {len(pts)}", "{"] + [f"{x:.3f} {y:.3f}" for x, y in pts] + ["}"]
    path.write_text("\n".join(lines) + "\n")


def make_synthetic_set(folder: Path, n: int, seed: int = 0, size: int = 96) -> Path:
    """n images of a drawn face (points as dots, varying place/size/yaw) with .pts and pose.csv."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = template_face()
    rows = ["stem,yaw,pitch,roll"]
    for i in range(n):
        img = np.full((size, size, 3), rng.integers(40, 90), np.uint8)
        side = rng.uniform(0.45, 0.6) * size
        yaw = rng.uniform(-30, 30)
        pts = base.copy()
        pts[:, 0] = 0.5 + (pts[:, 0] - 0.5) * np.cos(np.deg2rad(yaw)) - 0.1 * np.sin(np.deg2rad(yaw))
        roll = rng.uniform(-20, 20)  # head tilted clockwise as displayed: image points turn clockwise
        a = np.deg2rad(roll)
        pts = (pts - 0.5) @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + 0.5
        pts = pts * side + rng.uniform(0.1, 0.9 - side / size, size=2) * size
        cv2.fillConvexPoly(img, cv2.convexHull(pts.astype(np.int32)), (150, 160, 170))
        for x, y in pts:
            cv2.circle(img, (int(round(x)), int(round(y))), 1, (20, 20, 200), -1)
        stem = f"face_{i:03d}"
        cv2.imwrite(str(folder / f"{stem}.png"), img)
        write_pts(folder / f"{stem}.pts", pts)
        rows.append(f"{stem},{yaw:.2f},0.00,{roll:.2f}")
    (folder / "pose.csv").write_text("\n".join(rows) + "\n")
    return folder


def tiny_train_config(data: Path, out: Path, **overrides):
    """A TrainConfig that trains a tiny network (64 px, width 0.5, no augmentation) on ``data`` in
    seconds; ``overrides`` replace any setting."""
    from asmnet.training.augment import AugmentConfig
    from asmnet.training.config import TrainConfig

    base = dict(augment=AugmentConfig.none().to_dict(), data=[str(data)], out=str(out), input_size=64, width=0.5,
                epochs=2, batch_size=4, lr=1e-3, warmup_epochs=0, workers=0, val_fraction=0.2, shape_passes=2,
                device="cpu")
    return TrainConfig(**(base | overrides))


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory) -> Path:
    return make_synthetic_set(tmp_path_factory.mktemp("synthetic") / "synth", 64)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a loaded 2-core machine two threads made tiny training steps 100x slower."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's astronaut (BGR) and the shipped model's own 68 points on her face
    (FaceAligner's default 0-based pixels)."""
    skdata = pytest.importorskip("skimage.data", reason="the test photo comes from scikit-image")
    from asmnet.api import FaceAligner
    from asmnet.geometry import tight_box

    bgr = np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])
    aligner = FaceAligner(refine=0, threads=1)
    # a rough box around the face; two straightened passes settle on the model's own answer
    face = aligner(bgr, boxes=[[160.0, 40.0, 260.0, 160.0]], channel_order="bgr")[0]
    aligner.refine, aligner.straighten = 2, True
    face = aligner(bgr, boxes=[tight_box(face.landmarks)], channel_order="bgr")[0]
    return bgr, face.landmarks
