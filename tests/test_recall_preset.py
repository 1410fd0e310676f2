"""Issue 25.12: the ``recall`` detector preset (FaceAligner(preset="recall"), --recall): more
turned and tilted faces, opt-in (its measured cost is over the speed budget; see
benchmarks/turned_faces.py and benchmarks/README.md "Turned faces")."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from asmnet import FaceAligner
from asmnet.cli import build_parser, detector_options
from asmnet.detection import PRESETS, available_detectors, box_iou, make_detector
from asmnet.detection.presets import preset_options
from asmnet.errors import SettingError

needs_mtcnn = pytest.mark.skipif(available_detectors().get("mtcnn") != "ok", reason="needs the mtcnn package")


def turned_astronaut(degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """skimage's astronaut turned about its centre, and her face's box (MTCNN's, upright) turned
    with it: the centre moved, the size kept."""
    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    turn = cv2.getRotationMatrix2D((256, 256), degrees, 1.0)
    face = np.array([180.0, 58.0, 269.0, 172.0])  # MTCNN's box upright
    centre = (face[:2] + face[2:]) / 2 @ turn[:, :2].T + turn[:, 2]
    half = (face[2:] - face[:2]) / 2
    return cv2.warpAffine(image, turn, (512, 512), borderMode=cv2.BORDER_REPLICATE), np.r_[centre - half, centre + half]


def test_preset_options_given_options_win() -> None:
    assert preset_options(None, "mtcnn", {"min_face": 24}) == {"min_face": 24}
    assert preset_options("recall", "mtcnn", {}) == PRESETS["recall"]["mtcnn"]
    assert preset_options("recall", "mtcnn", {"angles": (45.0,)})["angles"] == (45.0,)
    assert preset_options("recall", "haar", {"min_size": 30}) == {"min_size": 30}  # nothing for it in the preset
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        preset_options("fast", "mtcnn", {})


@needs_mtcnn
def test_recall_preset_finds_a_face_turned_beyond_the_default() -> None:
    image, face = turned_astronaut(80)
    assert make_detector("mtcnn").detect(image) == []  # upright search only: missed
    found = make_detector("auto", preset="recall").detect(image)
    assert len(found) == 1 and box_iou(found[0].box, face) > 0.6  # mapped back onto the face
    faces = FaceAligner(preset="recall")(image)
    # on the face; 80 degrees is beyond what the landmark network was trained on (+-30, and the
    # preset turns by 30): its points are poor (box IoU 0.29-0.39 across our networks), and flagged
    assert len(faces) == 1 and box_iou(faces[0].box, face) > 0.25
    assert faces[0].flagged or box_iou(faces[0].box, face) > 0.6


@needs_mtcnn
def test_recall_preset_keeps_upright_faces_and_adds_no_false_ones() -> None:
    recall = make_detector("auto", preset="recall")
    assert recall.options()["angles"] == [-30.0, 30.0] and recall.thresholds == (0.9, 0.7, 0.7)
    image, face = turned_astronaut(0)
    default, more = make_detector("mtcnn").detect(image), recall.detect(image)
    assert len(default) == len(more) == 1
    np.testing.assert_array_equal(default[0].box, more[0].box)  # found upright: the upright box, as without the preset
    for name in ("coffee", "chelsea", "rocket"):
        assert recall.detect(cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR)) == []


@needs_mtcnn
def test_default_detector_is_not_the_preset() -> None:
    options = FaceAligner()._detector.options()
    assert "angles" not in options and options["thresholds"] == [0.9, 0.7, 0.7]


def test_unknown_or_misplaced_preset_is_a_setting_error() -> None:
    with pytest.raises(SettingError, match="unknown detector preset 'fast'"):
        FaceAligner(preset="fast")
    with pytest.raises(SettingError, match="preset 'recall' given with no detector"):
        FaceAligner(detector=None, preset="recall")
    with pytest.raises(SettingError, match="preset must be a name"):
        FaceAligner(preset=3)


def test_cli_recall_flag_reaches_the_detector_options() -> None:
    parser = build_parser()
    assert detector_options(parser.parse_args(["predict", "a.jpg", "--recall"])) == {"preset": "recall"}
    assert detector_options(parser.parse_args(["predict", "a.jpg"])) == {}
    assert detector_options(parser.parse_args(["evaluate", "--data", "d", "--recall", "--min-face", "24"])) == {
        "preset": "recall", "min_face": 24.0}
