"""Every bad call of the Python API raises DataError (issue 14.9, 13.8): bad boxes, unreadable
PIL images, settings of the wrong type; nothing else gets through."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from asmnet import FaceAligner
from asmnet.errors import DataError


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner()


IMAGE = np.zeros((64, 64, 3), np.uint8)
BAD_BOXES = ["abc", [[1, 2, 3]], 5, [[np.nan, 0, 10, 10]], [[10, 10, 0, 0]], [[0, 0, 10, -5]], [[5, 5, 5, 9]],
             [[0, 0, np.inf, 10]], [[0, 0, 1e300, 1e300]], {"a": 1}, [[None, 0, 1, 1]], [[[0, 0, 9, 9]]]]


@pytest.mark.parametrize("boxes", BAD_BOXES, ids=repr)
def test_bad_boxes_are_data_errors(aligner, boxes) -> None:
    with pytest.raises(DataError, match="box"):
        aligner(IMAGE, boxes=boxes)


def test_good_boxes_still_work(aligner) -> None:
    assert aligner(IMAGE, boxes=[]) == []
    assert len(aligner(IMAGE, boxes=np.array([[4, 4, 40, 40], [1e6, 1e6, 1e6 + 50, 1e6 + 50]]))) == 2


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_truncated_and_closed_pil_images_are_data_errors(aligner) -> None:
    data = _jpeg()
    with pytest.raises(DataError, match="truncated"):
        aligner(Image.open(io.BytesIO(data[: len(data) // 2])), boxes=[[0, 0, 9, 9]])
    closed = Image.open(io.BytesIO(data))
    closed.load()
    closed.close()
    with pytest.raises(DataError, match="closed"):
        aligner(closed, boxes=[[0, 0, 9, 9]])


@pytest.mark.parametrize("call", [
    lambda a: a(IMAGE, channel_order=3), lambda a: a("photo.jpg", channel_order="RGB"), lambda a: a(b"\xff\xd8"),
    lambda a: a(np.zeros((8, 8), bool)), lambda a: a(np.full((8, 8, 3), np.nan)),
])
def test_bad_images_and_channel_orders_are_data_errors(aligner, call) -> None:
    with pytest.raises(DataError):
        call(aligner)


@pytest.mark.parametrize("settings", [
    {"asm_blend": "x"}, {"asm_blend": 5}, {"backend": "tf"}, {"threads": -1}, {"threads": "two"},
    {"min_score": "x"}, {"detector": 5}, {"model": 5}, {"flip_tta": "no"}, {"straighten": "no"},
    {"rotation_search": 1}, {"early_stop": "yes"},
])
def test_mistyped_settings_are_data_errors(settings) -> None:
    with pytest.raises(DataError):
        FaceAligner(**settings)


def test_bad_detector_options_are_data_errors() -> None:
    with pytest.raises(DataError):
        FaceAligner(upsample="x")(IMAGE)
