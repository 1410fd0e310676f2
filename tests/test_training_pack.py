"""scripts/make_training_pack.py: the compact copy a GPU machine trains on keeps keys, poses and
points exact while the images shrink."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from conftest import make_synthetic_set

from asmnet.formats import load_faces, read_image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_training_pack.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_training_pack", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pixel_centres_map_exactly():
    pack = load_script()
    # halving merges 1-based pixels 1 and 2 into new pixel 1: their midpoint 1.5 lands on its centre
    assert np.isclose(pack.scaled_points(np.array([1.5]), 0.5, 1.0), 1.0).all()
    assert np.isclose(pack.scaled_points(np.array([0.5]), 0.5, 0.0), 0.0).all()  # 0-based: the same rule


def test_pack_shrinks_faces_and_keeps_keys_poses_and_points(tmp_path):
    pack = load_script()
    src = make_synthetic_set(tmp_path / "synth", 6, seed=3, size=120)
    assert pack.main(["--data", str(src), "--out", str(tmp_path / "pack"), "--max-side", "40",
                      "--label-origin", "0"]) == 0  # the synthetic dots are drawn at 0-based pixels
    before, _ = load_faces(src)
    after, errors = load_faces(tmp_path / "pack" / "synth")
    assert not errors and [r.key for r in after] == [r.key for r in before]
    assert (tmp_path / "pack" / "synth" / "pose.csv").read_text() == (src / "pose.csv").read_text()
    for old, new in zip(before, after):
        np.testing.assert_allclose(new.pose, old.pose)
        side = np.max(new.points.max(0) - new.points.min(0))
        old_side = np.max(old.points.max(0) - old.points.min(0))
        if old_side <= 40:  # small faces travel as they are
            assert Path(new.image).read_bytes() == Path(old.image).read_bytes()
            np.testing.assert_allclose(new.points, old.points, atol=1e-3)
            continue
        assert side <= 40.5
        # the shrunk image agrees with the shrunk points: the drawn red dots sit on them
        image = read_image(new.image).astype(float)
        redness = image[..., 2] - image[..., 1]
        x, y = np.round(new.points).astype(int).T
        inside = (x >= 0) & (y >= 0) & (x < image.shape[1]) & (y < image.shape[0])
        assert redness[y[inside], x[inside]].mean() > redness.mean() + 10
