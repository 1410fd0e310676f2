"""Self-distillation (--teacher): the teacher's points, its checks against the run, the loss term
and a tiny run taught by a tiny teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_train_config

from asmnet.errors import AsmnetError
from asmnet.markup import markup_for
from asmnet.nn.losses import ASMLoss
from asmnet.shape_model import ShapeModel
from asmnet.training.distill import Teacher, recorded_split
from asmnet.training.split import ALL_DATA_PATTERN
from asmnet.training.trainer import train

pytestmark = pytest.mark.slow  # a training run / subprocesses: left out of pytest -m "not slow"


@pytest.fixture(scope="module")
def teacher_run(synthetic_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    train(tiny_train_config(synthetic_set, out))
    return out


def test_teacher_points_are_flip_averaged_and_mirror_with_the_crop(synthetic_set, teacher_run, tmp_path):
    """Mirroring the crop mirrors the teacher's points exactly (flip TTA makes it equivariant),
    and the points are in the network's units (inside the crop, near the annotations)."""
    cfg = tiny_train_config(synthetic_set, tmp_path / "student", teacher=[str(teacher_run / "best.pt")])
    teacher, notes = Teacher.load(cfg)
    assert notes == []  # a run checkpoint records its split: checked, nothing to say
    rng = np.random.default_rng(0)
    crops = torch.from_numpy(rng.integers(0, 256, size=(5, 3, 64, 64), dtype=np.uint8))
    points = teacher(crops).numpy().reshape(5, -1, 2)
    mirrored = teacher(torch.flip(crops, dims=[3])).numpy().reshape(5, -1, 2)
    flip = markup_for(68).flip_array()
    assert np.allclose(mirrored[:, flip] * [-1.0, 1.0], points, atol=1e-5)
    assert np.abs(points).max() < 1.0


def test_a_teacher_must_fit_the_run(synthetic_set, teacher_run, tmp_path):
    ckpt = str(teacher_run / "best.pt")
    wrong_size = tiny_train_config(synthetic_set, tmp_path / "s1", teacher=[ckpt], input_size=96)
    with pytest.raises(AsmnetError, match=r"--teacher .*best.pt: it takes 64 px crops with 68 points, this run 96 px"):
        Teacher.load(wrong_size)
    other_split = tiny_train_config(synthetic_set, tmp_path / "s2", teacher=[ckpt], split_seed=3)
    with pytest.raises(AsmnetError, match=r"another validation split \(split_seed 0 \(this run 3\)\)"):
        Teacher.load(other_split)
    with pytest.raises(AsmnetError, match=r"--teacher .*nowhere.pt: .*no such model"):
        Teacher.load(tiny_train_config(synthetic_set, tmp_path / "s3", teacher=[str(tmp_path / "nowhere.pt")]))
    with pytest.raises(AsmnetError, match="--teacher-weight"):
        tiny_train_config(synthetic_set, tmp_path / "s4", teacher=[ckpt], teacher_weight=-1.0)


def test_the_shipped_model_records_its_split():
    # fine-tuned on all four folders: Udacity clips and the faces of one HELEN / AFW photo kept together
    assert recorded_split("default") == {"val_fraction": 0.12, "group_pattern": ALL_DATA_PATTERN, "split_seed": 0}


def test_teacher_term_of_the_loss():
    shapes = np.random.default_rng(0).normal(scale=0.1, size=(50, 136))
    loss = ASMLoss(ShapeModel.fit(shapes, 0.9), point_loss="l1", teacher_weight=0.5)
    pred, target = torch.zeros(2, 136), torch.full((2, 136), 0.1)
    pose = torch.zeros(2, 3)
    plain, parts = loss(pred, pose, target, pose, 0, 10)
    assert "teacher" not in parts
    taught, parts = loss(pred, pose, target, pose, 0, 10, teacher_points=torch.full((2, 136), 0.2))
    assert parts["teacher"] == pytest.approx(0.2)
    assert float(taught - plain) == pytest.approx(0.5 * 0.2)


def test_a_taught_run_logs_its_teacher_and_learns(synthetic_set, teacher_run, tmp_path, capsys):
    out = tmp_path / "student"
    train(tiny_train_config(synthetic_set, out, teacher=[str(teacher_run / "best.pt")], teacher_weight=2.0))
    err = capsys.readouterr().err
    assert "teacher: 1 model(s) with flip TTA, validation NME" in err
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(h["train"]["teacher"] > 0 for h in history)
    assert history[1]["train"]["total"] < history[0]["train"]["total"]
    assert json.loads((out / "config.json").read_text())["teacher"] == [str(teacher_run / "best.pt")]
