"""`asmnet evaluate` reports per subfolder, gives each face's points, and says when the model
trained on the faces it scores (issue 25.5). Tiny synthetic faces: fast, and the numbers do not matter."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_synthetic_set

from asmnet.cli import main
from asmnet.evaluation import recorded_training_faces
from asmnet.formats import load_many
from asmnet.metrics import nme
from asmnet.runtime import DEFAULT_MODEL_DIR, load_model

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")
VAL_KEYS = DEFAULT_MODEL_DIR / "val_keys.txt"


def run(argv: list, capsys) -> tuple[int, list[str], list[str]]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out.splitlines(), captured.err.strip().splitlines()


def test_every_subfolder_is_reported_and_each_face_has_its_points(tmp_path, capsys):
    data = tmp_path / "300w"
    make_synthetic_set(data / "test" / "helen", 3, seed=1)
    make_synthetic_set(data / "test" / "ibug", 2, seed=2)
    rc, out, err = run(["evaluate", "--data", data, "--threads", "1", "--json", tmp_path / "e.json"], capsys)
    assert rc == 0, err
    assert [line.split(":")[0] for line in out[1:4]] == ["  300w", "    300w/test/helen", "    300w/test/ibug"]
    assert out[2].startswith("    300w/test/helen: 3 faces, NME mean") and out[3].startswith("    300w/test/ibug: 2 faces")
    doc = json.loads((tmp_path / "e.json").read_text())
    assert {k: v["n"] for k, v in doc["per_subfolder"].items()} == {"300w/test/helen": 3, "300w/test/ibug": 2}
    assert doc["per_folder"]["300w"]["n"] == 5 and doc["training_faces"] == []  # not a folder it trained on
    # the points are the prediction the NME was measured on (in the annotations' convention)
    model = load_model(None, threads=1)
    truth = {r.key: r.points for r in load_many([str(data)])[0]}
    for item in doc["per_image"]:
        points = np.array(item["landmarks"])
        assert points.shape == (68, 2)
        assert nme(points[None], truth[item["image"]][None], model.info.markup)[0] == pytest.approx(item["nme"],
                                                                                                   abs=0.05)


def rename_face(folder: Path, old: str, new: str) -> None:
    for suffix in (".png", ".pts"):
        (folder / f"{old}{suffix}").rename(folder / f"{new}{suffix}")
    pose = folder / "pose.csv"
    pose.write_text(pose.read_text().replace(f"{old},", f"{new},"))


def test_evaluate_says_when_the_model_trained_on_the_faces_it_scores(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the key list is named by its absolute path from outside the clone
    held_out = sorted(VAL_KEYS.read_text().split())
    lfpw = [k for k in held_out if k.startswith("lfpw_train/")][0].split("/")[1]  # a validation face's name
    data = make_synthetic_set(tmp_path / "lfpw_train", 3, seed=3)  # a folder named like a training folder
    rename_face(data, "face_000", lfpw)
    out_json = tmp_path / "e.json"
    rc, out, err = run(["evaluate", "--data", data, "--threads", "1", "--json", out_json], capsys)
    assert rc == 0, err
    assert err == [f"asmnet: note: 2 of the 3 faces scored are faces model default was trained on (lfpw_train, less "
                   f"its validation faces): these numbers flatter it; --keys {VAL_KEYS} scores only its validation "
                   "faces"]
    assert out[1].endswith(", 2 of them training faces")
    assert json.loads(out_json.read_text())["training_faces"] == ["lfpw_train/face_001", "lfpw_train/face_002"]
    rc, out, err = run(["evaluate", "--data", data, "--threads", "1", "--keys", VAL_KEYS], capsys)
    assert rc == 0 and err == [] and out[0].startswith("model default: 1 faces"), (out, err)


def test_training_faces_come_from_the_card_and_the_runs_split(tmp_path):
    run_dir = tmp_path / "runs" / "mine"
    run_dir.mkdir(parents=True)
    (run_dir / "split.json").write_text(json.dumps({"val_keys": ["faces/a", "faces/b"]}))
    card = {"train_config": {"data": ["/data/faces", "/data/more/"], "out": str(run_dir)}}
    info = SimpleNamespace(name="mine", card=card)
    # a checkpoint beside its split.json, and an exported package elsewhere that names its run
    for model_path in (run_dir / "best.pt", tmp_path / "package"):
        found = recorded_training_faces(model_path, info)
        assert found.folders == ("faces", "more") and found.held_out == {"faces/a", "faces/b"}
        assert found.trained_on("faces/c") and found.trained_on("more/a") and not found.trained_on("faces/a")
        assert not found.trained_on("other/c")
    (run_dir / "split.json").unlink()
    found = recorded_training_faces(run_dir / "best.pt", info)
    assert found.held_out is None and found.trained_on("faces/a")  # no split recorded: every face of the folder
    assert recorded_training_faces(run_dir / "best.pt", SimpleNamespace(name="x", card={})) is None
