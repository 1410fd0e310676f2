"""Annotations lying off their image are skipped with one line each in evaluate and training,
unless --keep-off-image (issue 14.10)."""

from __future__ import annotations

import json

import pytest
from conftest import make_synthetic_set

from asmnet.cli import main
from asmnet.formats import read_pts, write_pts


@pytest.fixture(scope="module")
def off_set(tmp_path_factory):
    folder = make_synthetic_set(tmp_path_factory.mktemp("off") / "off", 10, size=64)
    pts = read_pts(folder / "face_003.pts")
    write_pts(folder / "face_003.pts", pts + [50_000, 0])  # far to the right of the 64 px picture
    cut = read_pts(folder / "face_005.pts")
    cut[8, 1] = 64 + 10  # the chin just below the frame: a face cut by the border stays
    write_pts(folder / "face_005.pts", cut)
    return folder


def test_evaluate_skips_a_face_off_its_image_in_one_line(off_set, tmp_path, capsys) -> None:
    out = tmp_path / "e.json"
    rc = main(["evaluate", "--data", str(off_set), "--json", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    skipped = [line for line in err if line.startswith("asmnet: skipped: ")]
    assert rc == 1 and len(skipped) == 1, err
    assert "face_003.png: point" in skipped[0] and "outside the 64x64 image" in skipped[0]
    assert json.loads(out.read_text())["n"] == 9
    rc = main(["evaluate", "--data", str(off_set), "--json", str(out), "--keep-off-image"])
    assert rc == 0 and json.loads(out.read_text())["n"] == 10


def test_training_skips_a_face_off_its_image(off_set, tmp_path) -> None:
    from asmnet.training.config import TrainConfig
    from asmnet.training.trainer import Run

    common = dict(data=[str(off_set)], out=str(tmp_path / "run"), input_size=32, width=0.25, epochs=1, batch_size=4,
                  workers=0, val_fraction=0.0, shape_passes=1, device="cpu")
    run = Run(TrainConfig(**common))
    assert len(run.train_regions) == 9 and len(run.failures) == 1 and "face_003.png" in str(run.failures[0])
    run = Run(TrainConfig(**common, keep_off_image=True))
    assert len(run.train_regions) == 10 and not run.failures
