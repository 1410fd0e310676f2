"""Tests of asmnet.draw: pose-axis directions per the 300W-LP convention, and drawing smoke tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from asmnet.draw import AXIS_COLORS, draw_face, draw_faces, pose_axes_2d

CENTER = (100.0, 100.0)
LENGTH = 50.0


def test_frontal_axes() -> None:
    ends = pose_axes_2d((0.0, 0.0, 0.0), CENTER, LENGTH)
    assert ends["x"] == pytest.approx((150.0, 100.0))  # x to the image's right
    assert ends["y"] == pytest.approx((100.0, 50.0))  # y up
    assert ends["z"] == pytest.approx((100.0, 100.0))  # z towards the camera: a point


def test_yaw_positive_nose_points_left() -> None:
    ends = pose_axes_2d((30.0, 0.0, 0.0), CENTER, LENGTH)
    assert ends["z"][0] < CENTER[0] - 20.0
    assert ends["z"][1] == pytest.approx(CENTER[1])
    assert ends["x"][1] == pytest.approx(CENTER[1])


def test_pitch_positive_nose_points_up() -> None:
    ends = pose_axes_2d((0.0, 30.0, 0.0), CENTER, LENGTH)
    assert ends["z"][1] < CENTER[1] - 20.0
    assert ends["z"][0] == pytest.approx(CENTER[0])


def test_roll_positive_tilts_clockwise() -> None:
    ends = pose_axes_2d((0.0, 0.0, 30.0), CENTER, LENGTH)
    assert ends["x"][0] > CENTER[0]
    assert ends["x"][1] > CENTER[1] + 20.0  # right end goes down: clockwise as displayed
    assert ends["y"][0] > CENTER[0]  # the top of the head moves right


def test_axes_keep_length_in_3d() -> None:
    ends = pose_axes_2d((25.0, -10.0, 40.0), CENTER, LENGTH)
    for end in ends.values():
        assert np.hypot(end[0] - CENTER[0], end[1] - CENTER[1]) <= LENGTH + 1e-9


def _ring_face(n: int = 40) -> np.ndarray:
    """Points on a circle of radius 60 around (160, 120); not 68/98 points, so the centre is their mean."""
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([160.0 + 60.0 * np.cos(angles), 120.0 + 60.0 * np.sin(angles)], axis=1)


def _dominant(image: np.ndarray, bgr: tuple[int, int, int]) -> np.ndarray:
    """Mask of pixels whose strong channels are exactly those of the pure colour ``bgr``."""
    strong = image.astype(np.int32) > 100
    return np.all(strong == (np.array(bgr) > 0), axis=-1) & strong.any(axis=-1)


def test_draw_face_draws_everything_on_a_copy() -> None:
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    points = _ring_face()
    out = draw_face(image, points, box=(100, 60, 220, 180), pose=(0.0, 0.0, 0.0), score=0.97)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not image.any()  # input untouched
    assert _dominant(out, AXIS_COLORS["x"]).sum() > 20
    assert _dominant(out, AXIS_COLORS["y"]).sum() > 20
    assert _dominant(out, (0, 255, 255)).sum() > 40  # yellow landmark dots
    assert out[120, 160].any()  # centre (mean of the points): the axes meet there


def test_draw_face_x_axis_goes_down_right_for_roll() -> None:
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    out = draw_face(image, _ring_face(), pose=(0.0, 0.0, 30.0))
    ys, xs = np.nonzero(_dominant(out, AXIS_COLORS["x"]))
    assert xs.size > 20
    assert ys.mean() > 125 and xs.mean() > 170  # from (160, 120) towards the lower right


def test_draw_face_grey_input_and_missing_parts() -> None:
    grey = np.zeros((50, 60), dtype=np.uint8)
    out = draw_face(grey, None, box=(5, 5, 40, 40), pose=(np.nan, 0.0, 0.0))
    assert out.shape == (50, 60, 3)
    assert out.any()


def test_draw_faces_duck_typed() -> None:
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    faces = [
        SimpleNamespace(box=(100, 60, 220, 180, 0.9), landmarks=_ring_face(), pose=(10, 5, 0), score=0.9),
        SimpleNamespace(box=(10, 10, 60, 60), landmarks=None, pose=None, score=None),
    ]
    out = draw_faces(image, faces)
    assert out.shape == image.shape
    assert out[10:60, 10:60].any() and out[60:180, 100:220].any()
    assert not image.any()
