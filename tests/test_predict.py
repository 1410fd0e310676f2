"""`asmnet predict` / `demo` with the shipped default model on a real photograph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from asmnet.cli import main
from asmnet.runtime import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    skdata = pytest.importorskip("skimage.data", reason="the test photo comes from scikit-image")
    folder = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(folder / "astronaut.png"), skdata.astronaut()[:, :, ::-1])
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.jpg").write_text("this is not a picture")
    (folder / "empty.png").write_bytes(b"")
    return folder


def test_predict_folder_reports_bad_files_and_goes_on(photo_dir, tmp_path, capsys):
    out_json = tmp_path / "out.jsonl"
    # dlib's HOG also fires (score ~0.1) on two mission patches of the astronaut's suit
    rc = main(["predict", str(photo_dir), str(tmp_path / "missing.jpg"), "--json", str(out_json),
               "--out", str(tmp_path / "annotated"), "--min-score", "0.3"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "notes.jpg" in err and "empty.png" in err and "missing.jpg" in err and "Traceback" not in err
    records = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert len(records) == 1 and records[0]["file"].endswith("astronaut.png")
    faces = records[0]["faces"]
    assert len(faces) == 1 and len(faces[0]["landmarks"]) == 68
    x1, y1, x2, y2 = faces[0]["box"]
    eyes = np.array(faces[0]["landmarks"])[[36, 45]]
    assert x1 < eyes[:, 0].min() and eyes[:, 0].max() < x2 and y1 < eyes[:, 1].mean() < y2
    assert abs(faces[0]["pose"]["yaw"]) < 45
    assert (tmp_path / "annotated" / "astronaut.png").stat().st_size > 0  # the input's name and extension


def test_resume_skips_what_is_done(photo_dir, tmp_path, capsys):
    out_json = tmp_path / "out.jsonl"
    main(["predict", str(photo_dir / "astronaut.png"), "--json", str(out_json)])
    with open(out_json, "a") as fh:
        fh.write('{"file": "half-writ')  # an interrupted write
    rc = main(["predict", str(photo_dir / "astronaut.png"), "--json", str(out_json), "--resume"])
    assert rc == 0 and "1 already in the output" in capsys.readouterr().err
    assert len(out_json.read_text().splitlines()) == 1


def test_nothing_to_do_exits_2(tmp_path, capsys):
    assert main(["predict", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("asmnet: error:")


def test_predict_runs_without_torch(photo_dir, tmp_path):
    # torch made unimportable: the inference path must not need it
    code = ("import sys; sys.modules['torch'] = None; from asmnet.cli import main; "
            f"sys.exit(main(['predict', {str(photo_dir / 'astronaut.png')!r}, '--json', {str(tmp_path / 'o.jsonl')!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "o.jsonl").read_text())["faces"]


def test_demo_writes_annotated_image_and_json(tmp_path):
    pytest.importorskip("skimage")
    assert main(["demo", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "astronaut.json").read_text())
    assert record["faces"] and (tmp_path / "astronaut_annotated.jpg").stat().st_size > 0


@pytest.mark.skipif(Path("/dev/video0").exists(), reason="this machine has a camera")
def test_missing_webcam_is_one_line_without_opencv_warnings():
    src = str(Path(__file__).resolve().parents[1] / "src")
    res = subprocess.run([sys.executable, "-m", "asmnet", "predict", "--webcam", "0"], capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2
    assert "WARN" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert "0: cannot open video" in res.stderr
