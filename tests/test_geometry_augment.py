"""Crops, flips and pose updates: points and pixels move together, flips are exact."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import require_data, template_face
from hypothesis import given, settings
from hypothesis import strategies as st

from asmnet.formats import load_faces
from asmnet.geometry import (
    crop_matrix,
    face_crop_matrix,
    from_normalised,
    invert_affine,
    invert_affines,
    similarity_transforms,
    tight_box,
    to_normalised,
    transform_points,
    warp,
)
from asmnet.markup import IBUG_68, WFLW_98
from asmnet.pose import angles_from_matrix, flip_pose, rotate_pose_in_image, rotation_matrix
from asmnet.training.augment import (
    AugmentConfig,
    CropTransform,
    crop_points,
    crop_pose,
    make_sample,
    sample_crop,
)


def test_warped_points_match_warped_pixels():
    # one bright pixel per point; after any warp, the brightest spot near each warped point is there
    img = np.zeros((200, 240), np.uint8)
    pts = np.array([[40.0, 50.0], [180.0, 60.0], [120.0, 150.0]])
    for x, y in pts:
        cv2.circle(img, (int(x), int(y)), 2, 255, -1)
    for angle, flip in [(0, False), (25, False), (-40, True)]:
        m = crop_matrix(np.array([120.0, 100.0]), 220.0, 128, angle, flip)
        out = warp(img, m, 128).astype(float)
        for p in transform_points(pts, m):
            x, y = int(round(p[0])), int(round(p[1]))
            win = out[y - 3 : y + 4, x - 3 : x + 4]
            ys, xs = np.mgrid[-3:4, -3:4]
            centroid = np.array([(win * xs).sum(), (win * ys).sum()]) / win.sum()
            assert np.abs(centroid + [x, y] - p).max() < 0.35


def test_normalised_round_trip_and_crop_edges():
    assert to_normalised(np.array([-0.5, 127.5]), 128).tolist() == [-0.5, 0.5]
    u = np.random.default_rng(0).uniform(-1, 1, (10, 2))
    assert np.allclose(to_normalised(from_normalised(u, 96), 96), u)


def test_face_crop_centres_the_box():
    pts = template_face() * 100 + 50
    m = face_crop_matrix(tight_box(pts), 128, 1.3)
    box = tight_box(transform_points(pts, m))
    assert np.allclose([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], 63.5)
    assert np.isclose(max(box[2] - box[0], box[3] - box[1]), 128 / 1.3)
    assert np.allclose(transform_points(transform_points(pts, m), invert_affine(m)), pts)


def _flip_transform(size: int) -> CropTransform:
    return CropTransform(crop_matrix(np.array([size / 2 - 0.5] * 2), size, size, 0, True), True, 0.0)


def test_flip_twice_is_identity():
    pts = template_face() * 80 + 20
    t = _flip_transform(128)
    once = crop_points(pts, t, IBUG_68)
    assert np.allclose(crop_points(once, t, IBUG_68), pts)
    pose = np.array([20.0, -5.0, 10.0])
    assert np.allclose(flip_pose(flip_pose(pose)), pose)


def test_flipped_left_eye_lands_on_right_eye_indices():
    pts = template_face() * 80 + 20
    flipped = crop_points(pts, _flip_transform(128), IBUG_68)
    left, right = list(IBUG_68.left_eye), list(IBUG_68.right_eye)
    # the image-left eye of the mirrored face is the mirror image of the original right eye
    assert np.allclose(np.sort(flipped[left][:, 0]), np.sort(127 - pts[right][:, 0]))
    assert flipped[left][:, 0].mean() < flipped[right][:, 0].mean()


@pytest.mark.parametrize("markup, source", [(IBUG_68, "samples/300w"), (WFLW_98, "samples/wflw")])
def test_flip_tables_on_real_faces(markup, source):
    folder = require_data(source)
    path = folder / "list_98pt_rect_attr_test.txt" if markup is WFLW_98 else folder
    records, _ = load_faces(path, n_points=markup.n_points)
    for rec in records[:6]:
        t = _flip_transform(256)
        m = face_crop_matrix(tight_box(rec.points), 256)
        t.matrix = np.vstack([t.matrix, [0, 0, 1]])[:2] @ np.vstack([m, [0, 0, 1]])
        flipped = crop_points(rec.points, t, markup)
        for a, b in markup.lr_pairs:
            if rec.points[b, 0] - rec.points[a, 0] > 2:  # pairs clearly left-right in the original
                assert flipped[a, 0] < flipped[b, 0], (rec.key, a, b)
        ordered = sum(rec.points[b, 0] - rec.points[a, 0] > 2 for a, b in markup.lr_pairs)
        assert ordered >= 0.8 * len(markup.lr_pairs), rec.key  # the pair table itself is left-first


def test_pose_rotation_follows_the_convention():
    # a counter-clockwise image rotation lowers the roll of a frontal face by the same angle
    assert np.allclose(rotate_pose_in_image(np.zeros(3), 15), [0, 0, -15], atol=1e-9)
    pose = np.array([30.0, -10.0, 5.0])
    assert np.allclose(angles_from_matrix(rotation_matrix(*pose)), pose)
    assert np.allclose(rotate_pose_in_image(rotate_pose_in_image(pose, 20), -20), pose)


def test_augmented_sample_keeps_points_on_the_face():
    rng = np.random.default_rng(1)
    img = np.zeros((160, 160, 3), np.uint8)
    pts = template_face() * 90 + 35
    for x, y in pts:
        cv2.circle(img, (int(round(x)), int(round(y))), 1, (255, 255, 255), -1)
    cfg = AugmentConfig(color_prob=0, blur_prob=0, gray_prob=0, lowres_prob=0, occlusion_prob=0)
    for _ in range(10):
        crop, units, pose = make_sample(img, pts, np.array([10.0, 0, 0]), 96, IBUG_68, rng, cfg)
        px = from_normalised(units, 96)
        inside = (px >= 1) & (px < 95)
        vals = [crop[int(round(y)), int(round(x))].max() for (x, y), ok in zip(px, inside.all(1)) if ok]
        assert np.mean(np.array(vals) > 40) > 0.9
        assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8


@settings(max_examples=60, deadline=None)
@given(
    cx=st.floats(-1e3, 1e3), cy=st.floats(-1e3, 1e3), side=st.floats(1.0, 1e4),
    angle=st.floats(-180, 180), flip=st.booleans(), size=st.integers(16, 256),
)
def test_crop_matrix_is_invertible(cx, cy, side, angle, flip, size):
    m = crop_matrix(np.array([cx, cy]), side, size, angle, flip)
    pts = np.array([[cx, cy], [cx + side / 3, cy - side / 5]])
    back = transform_points(transform_points(pts, m), invert_affine(m))
    assert np.allclose(back, pts, atol=1e-6 * max(1.0, side, abs(cx), abs(cy)))


def umeyama(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Reference least-squares similarity by SVD (Umeyama 1991), the part alone."""
    ms, mt = source.mean(0), target.mean(0)
    s, t = source - ms, target - mt
    u, sig, vt = np.linalg.svd(t.T @ s / len(s))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / (s**2).sum(1).mean()
    return np.hstack([scale * rotation, (mt - scale * rotation @ ms)[:, None]])


def test_batched_similarities_with_padding_equal_one_by_one_and_invert():
    rng = np.random.default_rng(3)
    parts = [rng.normal(50, 20, (n, 2)) for n in (6, 9, 20)]
    targets = [rng.normal(0, 10, (n, 2)) for n in (6, 9, 20)]
    width = 20
    # padding repeats the last point with weight 0: it must not move the fit
    padded = np.stack([np.concatenate([p, np.repeat(p[-1:] + 99.0, width - len(p), 0)]) for p in parts])
    padded_targets = np.stack([np.concatenate([t, np.repeat(t[-1:] - 7.0, width - len(t), 0)]) for t in targets])
    weights = np.array([[1.0] * len(p) + [0.0] * (width - len(p)) for p in parts])
    batched = similarity_transforms(padded, padded_targets, weights)
    for m, source, target in zip(batched, parts, targets):
        np.testing.assert_allclose(m, umeyama(source, target), atol=1e-9)
    assert np.allclose(invert_affines(batched), [invert_affine(m) for m in batched], atol=1e-12)
    with pytest.raises(ValueError):
        similarity_transforms(np.ones((1, 3, 2)), np.zeros((3, 2)))


def test_crop_matrix_rejects_bad_side():
    with pytest.raises(ValueError):
        crop_matrix(np.zeros(2), 0.0, 64)


def test_sample_crop_without_jitter_is_the_evaluation_crop():
    pts = template_face() * 70 + 10
    t = sample_crop(pts, 112, np.random.default_rng(0), AugmentConfig.none())
    assert np.allclose(t.matrix, face_crop_matrix(tight_box(pts), 112))
    assert np.allclose(crop_pose(np.array([5.0, 1.0, 2.0]), t), [5.0, 1.0, 2.0])


def crop_jitter(cfg: AugmentConfig, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Relative side change and centre shift (in crop sides) of ``n`` sampled crops of one face."""
    pts = template_face() * 70 + 10
    base = face_crop_matrix(tight_box(pts), 112)
    rng = np.random.default_rng(0)
    sides, shifts = [], []
    for _ in range(n):
        m = sample_crop(pts, 112, rng, cfg).matrix
        sides.append(np.linalg.norm(base[:, 0]) / np.linalg.norm(m[:, 0]) - 1)  # pixels per crop pixel
        centre_in = np.linalg.solve(m[:, :2], [56 - m[0, 2], 56 - m[1, 2]])
        centre_base = np.linalg.solve(base[:, :2], [56 - base[0, 2], 56 - base[1, 2]])
        shifts.append(np.abs(centre_in - centre_base).max() * np.linalg.norm(m[:, 0]) / 112)
    return np.array(sides), np.array(shifts)


def test_wide_draws_jitter_their_share_of_crops_by_the_wide_ranges():
    narrow = AugmentConfig(scale=0.02, shift=0.01, rotation=0, flip_prob=0)
    side, shift = crop_jitter(narrow)
    assert np.abs(side).max() <= 0.0201 and shift.max() <= 0.0101  # (+ the half-pixel centre convention)
    mixed = AugmentConfig(scale=0.02, shift=0.01, rotation=0, flip_prob=0, wide_prob=0.3, wide_scale=0.2, wide_shift=0.1)
    side, shift = crop_jitter(mixed)
    outside = (np.abs(side) > 0.02) | (shift > 0.01)
    # a wide draw lands inside the narrow box only by chance (~1 % here)
    assert 0.25 < outside.mean() < 0.33
    assert np.abs(side).max() > 0.18 and shift.max() > 0.09 and np.abs(side).max() <= 0.2001


def test_no_wide_draws_keep_the_random_stream():
    """wide_prob 0 draws nothing extra: runs recorded before the option replay exactly (the
    matrix and the next draw below came from sample_crop as it was before wide_prob)."""
    pts = template_face() * 70 + 10
    rng = np.random.default_rng(3)
    t = sample_crop(pts, 112, rng, AugmentConfig())
    before = [[-1.383422806, 0.6261596786, 78.8899610975], [0.6261596786, 1.383422806, -47.1046935712]]
    assert np.allclose(t.matrix, before, atol=1e-8) and t.flip
    assert rng.random() == pytest.approx(0.479051298140834, abs=1e-15)
