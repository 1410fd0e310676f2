"""Aligned face crops (FaceAligner.align, asmnet align), the batch and folder calls."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from asmnet import DataError, FaceAligner
from asmnet.align import ARCFACE_112, DEFAULT_SIZES, five_points, template_matrix
from asmnet.cli import main
from asmnet.geometry import similarity_transform, transform_points
from asmnet.runtime import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    skdata = pytest.importorskip("skimage.data", reason="the test photo comes from scikit-image")
    return np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])  # BGR: what an array means by default


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(min_score=0.3)  # dlib's HOG also fires at ~0.1 on the astronaut's suit


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (7, 2))
    a = np.deg2rad(23.0)
    truth = np.array([[1.7 * np.cos(a), -1.7 * np.sin(a), 4.0], [1.7 * np.sin(a), 1.7 * np.cos(a), -9.0]])
    np.testing.assert_allclose(similarity_transform(src, transform_points(src, truth)), truth, atol=1e-9)


def test_arcface_crop_puts_the_five_points_on_the_template(astronaut, aligner):
    (item,) = aligner.align(astronaut)
    assert item.image.shape == (112, 112, 3) and item.template == "arcface"
    five = five_points(item.landmarks)
    assert np.abs(five - ARCFACE_112).max() < 6  # a least-squares fit of 5 points: close, not exact
    # the crop is what cv2.warpAffine makes of the picture with the returned matrix
    np.testing.assert_array_equal(item.image, cv2.warpAffine(astronaut, item.matrix, (112, 112)))
    np.testing.assert_allclose(transform_points(item.face.landmarks, item.matrix), item.landmarks, atol=1e-9)
    # 224 is a multiple of 112: the same crop at twice the scale
    big = template_matrix(item.face.landmarks, "arcface", 224)
    np.testing.assert_allclose(big, item.matrix * 2, atol=1e-9)


def test_every_template_upright_and_centred(astronaut, aligner):
    for template, size in DEFAULT_SIZES.items():
        (item,) = aligner.align(astronaut, template=template)
        assert item.image.shape == (size, size, 3)
        eyes = five_points(item.landmarks)[:2]
        assert abs(eyes[0, 1] - eyes[1, 1]) < 0.03 * size  # eyes level: the roll is taken out
        centre = item.landmarks.mean(0)
        assert np.all(np.abs(centre - size / 2) < 0.2 * size), (template, centre)
    bgr = aligner.align(astronaut, template="ffhq", size=64)[0]
    rgb = aligner.align(np.ascontiguousarray(astronaut[:, :, ::-1]), template="ffhq", size=64, channel_order="rgb")[0]
    np.testing.assert_array_equal(rgb.image, bgr.image[:, :, ::-1])  # crops come in the input's channel order
    with pytest.raises(DataError, match="unknown template"):
        aligner.align(astronaut, template="mtcnn")


def test_rotated_face_comes_out_level(astronaut, aligner):
    h, w = astronaut.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 25, 1.0)
    turned = cv2.warpAffine(astronaut, turn, (w, h))
    points = transform_points(aligner(astronaut)[0].landmarks, turn)
    box = np.concatenate([points.min(0), points.max(0)])  # the model's box convention: tight box
    (item,) = aligner.align(turned, boxes=[box])
    eyes = five_points(item.landmarks)[:2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 4 and eyes[0, 0] < eyes[1, 0]


def test_batch_and_directory_calls(astronaut, aligner, tmp_path):
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    batch = aligner.predict_batch([astronaut, flipped])
    assert [len(f) for f in batch] == [1, 1]
    np.testing.assert_allclose(batch[0][0].landmarks, aligner(astronaut)[0].landmarks)
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), astronaut)
    cv2.imwrite(str(tmp_path / "sub" / "b.jpg"), flipped)
    (tmp_path / "bad.jpg").write_text("not a picture")
    found = aligner.predict_directory(tmp_path, skip_errors=True)
    assert sorted(found) == [str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.jpg")]
    assert list(aligner.predict_directory(tmp_path, recursive=False, skip_errors=True)) == [str(tmp_path / "a.png")]
    from asmnet import DataError

    with pytest.raises(DataError, match="bad.jpg"):
        aligner.predict_directory(tmp_path)


def test_align_command_writes_crops_and_json_and_never_overwrites_inputs(astronaut, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "r1").mkdir(parents=True)
    (src / "r2").mkdir()
    cv2.imwrite(str(src / "r1" / "x.jpg"), astronaut)
    cv2.imwrite(str(src / "r2" / "x.jpg"), astronaut)
    cv2.imwrite(str(src / "r1" / "x.png"), astronaut)
    out = tmp_path / "aligned"
    rc = main(["align", str(src), "--out", str(out), "--template", "ffhq", "--size", "96", "--min-score", "0.3"])
    assert rc == 0, capsys.readouterr().err
    crops = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert crops == ["r1/x.jpg.face0.png", "r1/x.png.face0.png", "r2/x.jpg.face0.png"]
    assert cv2.imread(str(out / "r1" / "x.jpg.face0.png")).shape == (96, 96, 3)
    records = [json.loads(line) for line in (out / "aligned.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["template"] == "ffhq" and r["pixel_origin"] == 0 for r in records)
    face = records[0]["faces"][0]
    assert len(face["matrix"]) == 2 and len(face["crop_landmarks"]) == 68 and face["crop"].endswith(".face0.png")
    # --out inside the inputs: the crops of the first run are not aligned again, inputs untouched
    rc = main(["align", str(src), "--out", str(src / "crops"), "--min-score", "0.3"])
    assert rc == 0
    rc = main(["align", str(src), "--out", str(src / "crops"), "--min-score", "0.3"])
    assert rc == 0 and len(list((src / "crops").rglob("*.png"))) == 3
    assert main(["align", str(src), "--out", str(src), "--min-score", "0.3"]) == 2
    assert "outside the inputs" in capsys.readouterr().err


def test_align_command_passes_the_detector_options(astronaut, tmp_path, capsys):
    # --detector-model / --min-face / --upsample reach the detector, as in predict
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), astronaut)
    out = tmp_path / "aligned"
    assert main(["align", str(photo), "--out", str(out), "--detector-model", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.onnx" in err and not out.exists()
    assert main(["align", str(photo), "--out", str(out), "--min-face", "4000"]) == 0
    assert json.loads((out / "aligned.jsonl").read_text())["faces"] == []  # no face that large
