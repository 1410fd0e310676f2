"""Pixel convention of the outputs (0-based OpenCV by default, iBUG's 1-based on request) and the
crop-only colour conversion of in-memory images."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from asmnet import FaceAligner
from asmnet.cli import main
from asmnet.draw import draw_faces
from asmnet.evaluation import evaluate
from asmnet.formats import FaceRecord
from asmnet.formats.image import as_pixels
from asmnet.inference import align_boxes
from asmnet.runtime import DEFAULT_MODEL_DIR, load_model

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")

BOX = np.array([[60.0, 50.0, 150.0, 150.0]])  # 0-based (OpenCV) pixels


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """An RGB picture with a drawn face-like blob (the numbers only need to be deterministic)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (200, 220, 3), dtype=np.uint8)
    cv2.ellipse(img, (105, 100), (45, 55), 0, 0, 360, (180, 150, 130), -1)
    return img


def test_default_is_opencv_pixels_and_origin_one_is_the_annotation_convention(picture):
    zero, one = FaceAligner(), FaceAligner(pixel_origin=1)
    assert zero.pixel_origin == 0.0 and one.pixel_origin == 1.0
    a, b = zero(picture, boxes=BOX, channel_order="rgb")[0], one(picture, boxes=BOX + 1, channel_order="rgb")[0]
    np.testing.assert_allclose(a.landmarks + 1, b.landmarks, atol=1e-9)
    np.testing.assert_allclose(a.box + 1, b.box)
    # the network side: boxes and predictions in the iBUG files' convention (what evaluate compares)
    bgr = np.ascontiguousarray(picture[:, :, ::-1])
    raw = align_boxes(zero.model, bgr, BOX + 1, refine=zero.refine, straighten=zero.straighten).landmarks
    if zero.refiner is not None:  # the package's refiner, in the same convention
        raw = zero.refiner.refine([bgr], np.zeros(1, int), raw, origin=1.0)
    np.testing.assert_allclose(b.landmarks, raw[0], atol=1e-9)


def test_a_model_without_the_origin_fix_is_shifted_too(picture):
    model = load_model("paper224")
    assert model.info.label_origin == 0.0 and model.info.annotation_origin == 1.0
    aligner = FaceAligner(model="paper224")
    face = aligner(picture, boxes=BOX, channel_order="rgb")[0]
    raw = align_boxes(model, np.ascontiguousarray(picture[:, :, ::-1]), BOX + 1, refine=aligner.refine,
                      straighten=aligner.straighten).landmarks
    np.testing.assert_allclose(face.landmarks, raw[0] - 1, atol=1e-9)


def test_evaluate_compares_in_the_annotations_convention(picture, tmp_path):
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), picture[:, :, ::-1])
    face = FaceAligner(pixel_origin=1)(picture, boxes=BOX + 1, channel_order="rgb")[0]
    points = face.landmarks + np.random.default_rng(1).normal(0, 2, face.landmarks.shape)
    model = load_model(None)
    one_based = evaluate(model, [FaceRecord(path, points, key="x/face")], progress=False)
    zero_based = evaluate(model, [FaceRecord(path, points - 1, key="x/face")], progress=False, annotation_origin=0)
    assert one_based.annotation_origin == 1.0 and zero_based.to_dict()["annotation_origin"] == 0.0
    assert zero_based.nme_mean == pytest.approx(one_based.nme_mean, abs=1e-9)
    wrong = evaluate(model, [FaceRecord(path, points - 1, key="x/face")], progress=False)
    assert wrong.nme_mean != pytest.approx(one_based.nme_mean, abs=1e-3)


def test_drawing_puts_points_on_the_same_pixels_in_either_convention(picture):
    zero = FaceAligner()(picture, boxes=BOX, channel_order="rgb")
    one = FaceAligner(pixel_origin=1)(picture, boxes=BOX + 1, channel_order="rgb")
    canvas = np.zeros((200, 220, 3), np.uint8)
    np.testing.assert_array_equal(draw_faces(canvas, zero), draw_faces(canvas, one, pixel_origin=1))


def test_predict_json_says_its_convention(picture, tmp_path):
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), picture[:, :, ::-1])
    for origin in ("0", "1"):
        out = tmp_path / f"{origin}.jsonl"
        assert main(["predict", str(path), "--json", str(out), "--pixel-origin", origin]) == 0
        assert json.loads(out.read_text())["pixel_origin"] == float(origin)


def test_only_the_crop_is_converted_and_every_layout_gives_the_same_points(picture):
    pixels, order = as_pixels(picture, "rgb")
    assert order == "rgb" and np.shares_memory(pixels, picture)  # no copy of the picture
    aligner = FaceAligner()
    ref = aligner(picture, boxes=BOX, channel_order="rgb")[0].landmarks
    bgr = np.ascontiguousarray(picture[:, :, ::-1])
    rgba = np.dstack([picture, np.full(picture.shape[:2], 255, np.uint8)])
    for image, kw in ((bgr, {}), (rgba, {"channel_order": "rgb"}), (picture[:, :, ::-1], {"channel_order": "bgr"})):
        np.testing.assert_allclose(aligner(image, boxes=BOX, **kw)[0].landmarks, ref, atol=1e-9)
    gray = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)
    gray_ref = aligner(np.dstack([gray] * 3), boxes=BOX)[0].landmarks
    np.testing.assert_allclose(aligner(gray, boxes=BOX)[0].landmarks, gray_ref, atol=1e-9)
