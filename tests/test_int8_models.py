"""The shipped INT8 models return float outputs: no points stuck on one value, no pose steps.

The INT8 graphs once quantised their outputs to 8 bits: points beyond the calibrated range were
clamped (jaw points 0-4 of skimage's camera man all at one x) and pose came in 0.38 deg steps.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_data

from asmnet.evaluation import read_keys
from asmnet.formats import load_many, read_image
from asmnet.geometry import tight_box
from asmnet.inference import align_boxes, crop_faces, predict_crops, units_to_image
from asmnet.metrics import nme
from asmnet.runtime import DEFAULT_MODEL_DIR, load_model

MODELS = DEFAULT_MODEL_DIR.parent
INT8 = ("default", "paper224")
# face boxes (annotation convention) of skimage's camera man and astronaut
PHOTO_BOXES = {"camera": [215.5, 129.5, 268.5, 182.5], "astronaut": [174.5, 75.5, 265.5, 166.5]}


def points_on_one_value(points: np.ndarray, min_points: int = 3) -> int:
    """How many faces (K, N, 2) have >= min_points points on exactly one x or y value."""
    return sum(
        any(np.unique(face[:, axis], return_counts=True)[1].max() >= min_points for axis in (0, 1))
        for face in points
    )


@pytest.mark.parametrize("name", INT8)
def test_shipped_int8_graphs_return_float(name):
    pytest.importorskip("onnx")
    from asmnet.packaging.quantize import quantized_outputs

    assert quantized_outputs(MODELS / name / "model.onnx") == []


@pytest.mark.parametrize("name", INT8)
def test_jaw_and_pose_follow_small_box_shifts_on_photos(name):
    """Boxes shifted by 0-1.1 px: every jaw point keeps its own x, pose moves by less than the
    old 0.38 deg step and the INT8 points stay within 1.5 px of float32."""
    skdata = pytest.importorskip("skimage.data", reason="the photos come from scikit-image")
    model = load_model(MODELS / name, threads=1)
    reference = load_model(MODELS / "default-fp32", threads=1) if name == "default" else None
    shifts = np.linspace(0.0, 1.1, 12)[:, None] * [1.0, 0.5, 1.0, 0.5]
    for photo, box in PHOTO_BOXES.items():
        image = getattr(skdata, photo)()
        bgr = np.ascontiguousarray(np.stack([image] * 3, -1) if image.ndim == 2 else image[:, :, ::-1])
        boxes = np.array(box) + shifts
        points, pose, _ = align_boxes(model, bgr, boxes)
        for face in points:
            assert len(np.unique(face[:5, 0])) == 5, (photo, face[:5, 0])  # jaw points 0-4
        assert points_on_one_value(points) == 0, photo
        for j in range(3):
            values = np.unique(pose[:, j])
            assert len(values) == len(boxes), (photo, j, pose[:, j])
            assert np.diff(values).min() < 0.1, (photo, j, values)  # no coarse grid
        if reference is not None:
            assert np.abs(points - align_boxes(reference, bgr, boxes)[0]).max() < 1.5, photo


def test_validation_faces_have_no_stuck_points_and_int8_is_close_to_float():
    # the default network's held-out faces: LFPW, HELEN, AFW and Udacity
    folders = [require_data(name) for name in ("lfpw_train", "helen_train", "afw", "udacity_train")]
    keys = read_keys(MODELS / "default" / "val_keys.txt")
    records = [r for r in load_many(folders)[0] if r.key in keys]
    assert len(records) == len(keys)
    images = [read_image(r.image) for r in records]
    gts = np.stack([r.points for r in records])
    results = {}
    for name in (*INT8, "default-fp32"):
        model = load_model(MODELS / name, threads=1)
        crops, mats = zip(*(crop_faces(im, tight_box(r.points)[None], model.info) for im, r in zip(images, records)))
        units, pose, _ = predict_crops(model, np.concatenate(crops))
        points = units_to_image(units, np.concatenate(mats), model.info)
        assert points_on_one_value(points) == 0, name
        assert [len(np.unique(pose[:, j])) for j in range(3)] == [len(records)] * 3, name  # no pose steps
        results[name] = float(nme(points, gts, model.info.markup).mean())
    assert abs(results["default"] - results["default-fp32"]) <= 0.03, results
