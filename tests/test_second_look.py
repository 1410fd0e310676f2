"""The second look (re-crop from the predicted points, straightened), rotation search and the quality flag."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import template_face

from asmnet.api import FaceAligner, rot90_matrix, turn_boxes
from asmnet.errors import ModelError
from asmnet.geometry import crop_matrix, tight_box, transform_points
from asmnet.inference import (
    EARLY_STOP,
    FIRST_PASS_JOINS,
    _network,
    align_boxes,
    align_faces,
    point_frames,
    shape_roll,
)
from asmnet.markup import IBUG_68
from asmnet.runtime import DEFAULT_MODEL_DIR, LandmarkModel, ModelInfo
from asmnet.shape_model import ShapeModel


def turn(points: np.ndarray, degrees: float, center=(0.0, 0.0)) -> np.ndarray:
    """Points turned clockwise as displayed (y down) by ``degrees`` about ``center``."""
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (np.asarray(points) - center) @ rot.T + center


def test_shape_roll_recovers_the_tilt_and_the_crop_undoes_it():
    face = template_face() - 0.5
    for degrees in (-100.0, -30.0, 0.0, 12.5, 45.0, 179.0):
        tilted = turn(face * 80 + [200, 150], degrees, center=(200, 150)) + [7, -3]
        angle = float(shape_roll(tilted[None], face)[0])
        assert angle == pytest.approx(degrees, abs=1e-9)
        # crop_matrix with that angle puts the face upright again: same shape as the template, scaled
        m = crop_matrix(tilted.mean(0), 200.0, 100, angle)
        upright = transform_points(tilted, m)
        scale = 100 / 200 * 80
        assert np.allclose(upright - upright.mean(0), (face - face.mean(0)) * scale, atol=1e-9)


def test_point_frames_is_the_tight_box_of_the_face_straightened():
    face = template_face() * 100 + [50, 60]
    center, side = point_frames(face[None], 1.3)
    box = tight_box(face)
    assert np.allclose(center[0], (box[:2] + box[2:]) / 2) and side[0] == pytest.approx(1.3 * (box[2:] - box[:2]).max())
    tilted = turn(face, 35.0, center=(120, 130))
    c2, s2 = point_frames(tilted[None], 1.3, np.array([35.0]))
    # the same crop as the upright face's, its centre turned with the face
    assert s2[0] == pytest.approx(side[0], rel=1e-12)
    assert np.allclose(c2[0], turn(center[0], 35.0, center=(120, 130)), atol=1e-9)


class ShapeStub(LandmarkModel):
    """A network that always answers ``units``: whatever the crop, the same normalised shape."""

    backend = "stub"

    def __init__(self, units: np.ndarray, size: int = 64):
        self.units = units
        sm = ShapeModel(units.reshape(-1), np.eye(136)[:, :2], np.ones(2), 0.9, 0.9, 2)
        self.info = ModelInfo("stub", size, 1.3, IBUG_68, sm, label_origin=1.0)
        self.calls = 0

    def _forward(self, batch):
        self.calls += 1
        return np.repeat(self.units.reshape(1, -1), len(batch), 0), np.tile([0.0, 0.0, 0.0], (len(batch), 1))


def fixed_point_units() -> np.ndarray:
    """A shape in crop units whose tight box is centred with side 1 / crop_scale: what the crop
    of the training convention makes of a face's own tight box."""
    face = template_face()
    lo, hi = face.min(0), face.max(0)
    return (face - (lo + hi) / 2) / (hi - lo).max() / 1.3


@pytest.mark.parametrize("straighten", [False, True])
def test_second_look_maps_points_back_exactly(straighten):
    """The first pass's points, cropped as training crops a labelled face, must give the same
    crop again: with a network that sees every crop the same way, each further pass returns the
    points of the first to rounding error, and every face of the image goes in one batch per pass."""
    stub = ShapeStub(fixed_point_units())
    image = np.zeros((300, 400, 3), np.uint8)
    boxes = np.array([[40.0, 50.0, 140.0, 170.0], [200.0, 20.0, 330.0, 120.0]])
    first = align_boxes(stub, image, boxes)
    assert stub.calls == 1
    again = align_boxes(stub, image, boxes, refine=2, straighten=straighten)
    assert stub.calls == 1 + 3  # one batch per pass
    assert np.abs(again.landmarks - first.landmarks).max() < 1e-9
    assert np.abs(again.pass_shift).max() < 1e-9 and np.allclose(again.angles, 0.0, atol=1e-9)


def test_first_crop_angle_turns_points_and_pose_back():
    """A first crop turned by 90 degrees (rotation search) maps its points and pose back to the image."""
    units = fixed_point_units()

    class PoseStub(ShapeStub):
        def _forward(self, batch):
            points, _ = super()._forward(batch)
            return points, np.tile([0.0, 0.0, 5.0], (len(batch), 1))

    stub = PoseStub(units)
    box = np.array([[100.0, 100.0, 200.0, 200.0]])
    plain = align_boxes(stub, np.zeros((300, 300, 3), np.uint8), box)
    turned = align_boxes(stub, np.zeros((300, 300, 3), np.uint8), box, angles=np.array([90.0]))
    # the crop was the image turned counter-clockwise by 90: in the image the face lies turned clockwise
    center = (plain.landmarks[0].min(0) + plain.landmarks[0].max(0)) / 2
    assert np.allclose(turned.landmarks[0], turn(plain.landmarks[0], 90.0, center), atol=1e-9)
    assert turned.pose[0, 2] == pytest.approx(95.0, abs=1e-6)


def test_rot90_matrix_matches_numpy_and_turn_boxes_inverts_it():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    for k in range(4):
        turned = np.rot90(image, k)
        m = rot90_matrix(k, image.shape)
        for x, y in [(0, 0), (6, 0), (3, 4), (6, 4)]:
            xt, yt = transform_points(np.array([x, y], float), m).round().astype(int)
            assert (turned[yt, xt] == image[y, x]).all()
        box = np.array([[1.0, 0.5, 4.0, 3.0]])
        back = turn_boxes(turn_boxes(box, m), rot90_matrix(k, image.shape, inverse=True))
        assert np.allclose(back, box)


# -- the shipped model on a real photo (the astronaut fixture: conftest.py) ---------------------
def inter_ocular_nme(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(b[36] - b[45]) * 100)


def rotated(bgr: np.ndarray, points: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The photo turned counter-clockwise by ``degrees`` about the face, the points turned with it
    (FaceAligner's default 0-based pixels, as OpenCV's), and the matrix back."""
    center = tuple(float(v) for v in points.mean(0))
    m = cv2.getRotationMatrix2D(center, degrees, 1.0)
    out = cv2.warpAffine(bgr, m, (bgr.shape[1], bgr.shape[0]))
    return out, transform_points(points, m), cv2.invertAffineTransform(m)


def test_second_look_straightens_a_turned_face(astronaut):
    """Predictions of a photo and of the same photo turned by 30 degrees agree after the
    straightened second look (points mapped back exactly), better than without straightening."""
    bgr, upright = astronaut
    image, moved, back = rotated(bgr, upright, 30.0)
    box = [tight_box(moved)]
    errors = {}
    for straighten in (False, True):
        aligner = FaceAligner(refine=1, straighten=straighten, threads=1)
        face = aligner(image, boxes=box, channel_order="bgr")[0]
        errors[straighten] = inter_ocular_nme(transform_points(face.landmarks, back), upright)
    assert errors[True] < 2.0
    assert errors[True] < errors[False]


def test_quality_flags_a_face_turned_by_90_degrees(astronaut):
    bgr, upright = astronaut
    aligner = FaceAligner(threads=1)
    assert aligner.quality_threshold is not None
    good = aligner(bgr, boxes=[tight_box(upright)], channel_order="bgr")[0]
    assert not good.flagged
    for degrees in (90.0, 180.0):
        image, moved, _ = rotated(bgr, upright, degrees)
        face = aligner(image, boxes=[tight_box(moved)], channel_order="bgr")[0]
        assert face.flagged and face.quality > good.quality


def test_quality_threshold_comes_from_model_json(tmp_path, astronaut):
    """FaceAligner flags with model.json's threshold for the kind of score its settings give."""
    bgr, upright = astronaut
    package = tmp_path / "pkg"
    shutil.copytree(DEFAULT_MODEL_DIR, package, ignore=shutil.ignore_patterns("weights.pt"))
    meta = json.loads((package / "model.json").read_text())
    face = FaceAligner(package, threads=1)(bgr, boxes=[tight_box(upright)], channel_order="bgr")[0]
    assert not face.flagged
    kind = FaceAligner(package, threads=1).quality_kind  # learned2 with the shipped default
    meta["quality_thresholds"] = {**meta.get("quality_thresholds", {}), kind: face.quality / 2}
    (package / "model.json").write_text(json.dumps(meta))
    aligner = FaceAligner(package, threads=1)
    assert aligner.quality_threshold == pytest.approx(face.quality / 2)
    assert aligner(bgr, boxes=[tight_box(upright)], channel_order="bgr")[0].flagged
    # another setting reads its own entry; without one nothing is flagged
    for one_pass_kind in ("shape", "learned0"):
        meta["quality_thresholds"].pop(one_pass_kind, None)
    (package / "model.json").write_text(json.dumps(meta))
    one_pass = FaceAligner(package, threads=1, refine=0)
    assert one_pass.quality_threshold is None
    assert not one_pass(bgr, boxes=[tight_box(upright)], channel_order="bgr")[0].flagged
    meta["quality_thresholds"] = {kind: -1.0}
    (package / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="quality_thresholds"):
        FaceAligner(package)


def test_rotation_search_finds_a_face_lying_on_its_side(astronaut):
    pytest.importorskip("dlib", reason="the default detector needs dlib")
    bgr, upright = astronaut
    lying = np.ascontiguousarray(np.rot90(bgr, 1))  # turned counter-clockwise: the face lies on its side
    truth = transform_points(upright, rot90_matrix(1, bgr.shape))  # 0-based pixels, as FaceAligner's
    plain = FaceAligner(threads=1, min_score=0.3)(lying, channel_order="bgr")
    assert not plain
    faces = FaceAligner(threads=1, min_score=0.3, rotation_search=True)(lying, channel_order="bgr")
    assert len(faces) == 1
    assert inter_ocular_nme(faces[0].landmarks, truth) < 3.0
    assert not faces[0].flagged


def test_early_stop_ends_the_second_look_of_a_face_that_did_not_move():
    """With ``early_stop`` a face whose first re-crop moved it little stops there (its result: the
    mean of its two passes); one that moved a lot takes the third pass; each pass is one batch."""
    units = fixed_point_units()

    class SecondCallOff(ShapeStub):
        """Answers face 0's first re-crop 0.1 crop sides to the right; every other crop as the fixed shape."""

        def _forward(self, batch):
            points, pose = super()._forward(batch)
            if self.calls == 2:
                points = points.copy()
                points[0, 0::2] += 0.1
            return points, pose

    image = np.zeros((300, 400, 3), np.uint8)
    boxes = np.array([[40.0, 50.0, 140.0, 170.0], [200.0, 20.0, 330.0, 120.0]])
    settled = align_boxes(ShapeStub(units), image, boxes)  # where a crop of the fixed shape puts the points
    stub = SecondCallOff(units)
    out = align_boxes(stub, image, boxes, refine=2, straighten=True, early_stop=(3.0, 10.0))
    assert stub.calls == 3 and out.passes.tolist() == [3, 2]
    assert np.abs(out.landmarks[1] - settled.landmarks[1]).max() < 1e-9  # two identical passes averaged
    # every output finite for both faces: the stopped one's missing third pass is left out
    assert np.isfinite(out.pose).all() and np.isfinite(out.quality).all() and np.isfinite(out.landmarks).all()
    # face 0 moved by a tenth of its crop: not stopped, its result is the mean of the two re-crops
    side = 1.3 * (tight_box(settled.landmarks[0])[2:] - tight_box(settled.landmarks[0])[:2]).max()
    assert out.pass_shift[0] < 1e-9  # its third pass agreed with its second
    assert np.allclose(out.landmarks[0] - settled.landmarks[0], [0.1 * side, 0.0], atol=1e-6)
    # a face seen turned in its first (upright) crop goes on, however little the points moved:
    # the straightened re-crop turned by 30 degrees

    class TurnedAtFirst(ShapeStub):
        def _forward(self, batch):
            points, pose = super()._forward(batch)
            if self.calls == 1:
                points = points.copy()
                points[1] = turn(points[1].reshape(-1, 2), 30.0).reshape(-1)
            return points, pose

    turned = align_boxes(TurnedAtFirst(units), image, boxes, refine=2, straighten=True, early_stop=(3.0, 10.0))
    assert turned.passes.tolist() == [2, 3] and abs(turned.angles[1]) == pytest.approx(30.0, abs=1e-6)
    # without early stop every face takes every pass
    stub = SecondCallOff(units)
    full = align_boxes(stub, image, boxes, refine=2, straighten=True)
    assert stub.calls == 3 and full.passes.tolist() == [3, 3]
    # early stop needs a pass to stop after: with refine 1 it changes nothing
    assert align_boxes(ShapeStub(units), image, boxes, refine=1, early_stop=(3.0, 10.0)).passes.tolist() == [2, 2]


class DotStub(ShapeStub):
    """A network that finds the brightest pixel of its crop and answers a mirror-symmetric shape
    centred there (so the mirrored crop's answer, mirrored back, must be the same image points)
    with a pose that turns with the dot; it keeps its crops."""

    def __init__(self, units: np.ndarray):
        super().__init__(units)
        flip = IBUG_68.flip_array()
        shape = units.reshape(-1, 2) - units.reshape(-1, 2).mean(0)
        self.shape = (shape + shape[flip] * [-1.0, 1.0]) / 2.0  # its own mirror image
        self.crops = []

    def _forward(self, batch):
        self.calls += 1
        self.crops.append(batch.copy())
        size = batch.shape[-1]  # the network's input: (B, 3, S, S)
        flat = batch.sum(1).reshape(len(batch), -1).argmax(1)
        ys, xs = np.divmod(flat, size)
        dots = (np.stack([xs, ys], 1) + 0.5) / size - 0.5
        points = (dots[:, None, :] + self.shape).reshape(len(batch), -1)
        # a mirrored crop reads (-yaw, pitch, -roll)
        return points, np.stack([100 * dots[:, 0], np.full(len(batch), 5.0), 50 * dots[:, 0]], 1)


def test_a_mirrored_first_re_crop_is_mapped_back_to_the_image():
    """``mirror_recrop`` (off by default) runs the first re-crop on the mirrored crop; its answer,
    mirrored back, is in the image's frame like every other pass (points and pose), and the other
    passes are not mirrored."""
    yy, xx = np.mgrid[:300, :400]
    blob = 250 * np.exp(-((xx - 121.0) ** 2 + (yy - 97.0) ** 2) / (2 * 6.0**2))  # the dot the stub finds
    image = np.repeat(blob[:, :, None], 3, 2).astype(np.uint8)
    boxes = np.array([[60.0, 50.0, 180.0, 170.0]])
    runs = {}
    for mirror in (False, True):
        stub = DotStub(fixed_point_units())
        trace = []
        out = align_faces(stub, [image], np.zeros(1, int), boxes, refine=2, trace=trace, mirror_recrop=mirror)
        runs[mirror] = (stub, trace, out)
    (plain, _, plain_out), (mirrored, mirrored_trace, mirrored_out) = runs[False], runs[True]
    # pass 2 saw the mirror image of the crop the plain run saw; passes 1 and 3 the same crops
    assert np.array_equal(mirrored.crops[1], plain.crops[1][..., ::-1])
    assert np.array_equal(mirrored.crops[0], plain.crops[0]) and np.array_equal(mirrored.crops[2], plain.crops[2])
    # every pass centres the shape on the dot (within a crop pixel: 2.4 image pixels), mirrored or not
    for t in mirrored_trace:
        assert np.abs(t["points"][0].mean(0) - [121.0, 97.0]).max() < 2.5
    # the stub's shape is its own mirror image: mapped back, the mirrored pass is the plain pass exactly
    assert np.allclose(mirrored_out.landmarks, plain_out.landmarks, atol=1e-9)
    assert np.allclose(mirrored_out.pose, plain_out.pose, atol=1e-9)
    # a crop with the dot well off its centre: the mirrored view's yaw and roll come back turned
    crop = image[67:131, 101:165][None]  # 64 x 64, the dot at x 20 of 64
    plain_units, plain_pose, _, _ = _network(DotStub(fixed_point_units()), crop, 8, False)
    back_units, back_pose, _, _ = _network(DotStub(fixed_point_units()), crop, 8, False, mirror=True)
    assert abs(plain_pose[0, 0]) > 10 and np.allclose(back_pose, plain_pose, atol=1e-9)
    assert np.allclose(back_units, plain_units, atol=1e-9)
    # off by default; and under flip TTA every pass sees both views, none is mirrored on its own
    stub = DotStub(fixed_point_units())
    align_boxes(stub, image, boxes, refine=1)
    assert np.array_equal(stub.crops[1], plain.crops[1])
    stub = DotStub(fixed_point_units())
    align_boxes(stub, image, boxes, refine=1, flip_tta=True, mirror_recrop=True)
    assert np.array_equal(stub.crops[1][1], stub.crops[1][0][..., ::-1])  # each batch: the crops, then their mirrors


@pytest.mark.parametrize("refine, early_stop, with_first", [(2, EARLY_STOP, 2 / 3), (2, None, 2 / 3), (1, None, 1 / 2)])
def test_the_first_pass_joins_the_mean_only_when_the_re_crop_stayed_close(refine, early_stop, with_first):
    """Past the early stop but within FIRST_PASS_JOINS a face averages its first pass with its
    re-crops; moved further, only the re-crops (its first crop was off). With or without early stop,
    one or two re-crops."""
    units = fixed_point_units()
    image = np.zeros((300, 400, 3), np.uint8)
    boxes = np.array([[40.0, 50.0, 140.0, 170.0], [200.0, 20.0, 330.0, 120.0]])
    settled = align_boxes(ShapeStub(units), image, boxes)
    a, b = IBUG_68.outer_eye_corners
    sides = np.array([1.3 * (tight_box(p)[2:] - tight_box(p)[:2]).max() for p in settled.landmarks])
    iods = np.linalg.norm(settled.landmarks[:, a] - settled.landmarks[:, b], axis=-1)
    results = {}
    for move in (0.5 * (EARLY_STOP[0] + FIRST_PASS_JOINS[0]), 2 * FIRST_PASS_JOINS[0]):  # % of the eye distance

        class SecondCallOff(ShapeStub):
            offsets = move / 100 * iods / sides  # crop units

            def _forward(self, batch):  # both faces' first re-crop answered `move` to the right
                points, pose = super()._forward(batch)
                if self.calls == 2:
                    points = points.copy()
                    points[:, 0::2] += self.offsets[:, None]
                return points, pose

        out = align_boxes(SecondCallOff(units), image, boxes, refine=refine, straighten=True, early_stop=early_stop)
        assert out.passes.tolist() == [refine + 1] * 2
        results[move] = (out.landmarks - settled.landmarks)[:, :, 0] / (SecondCallOff.offsets * sides)[:, None]
    close, far = results.values()
    # the re-crops sit one shift to the right, the first pass at 0
    assert np.allclose(close, with_first, atol=1e-6) and np.allclose(far, 1.0, atol=1e-6)


def test_early_stop_on_a_photo_with_an_upright_and_a_turned_face(astronaut):
    """The shipped model on two copies of a real face, one upright and one turned by 40 degrees, in
    one picture: the upright one stops after one re-crop, the turned one takes the third pass, and
    both come out right (points, pose and quality finite; the turned one's points where they belong)."""
    bgr, upright = astronaut
    turned, moved, _ = rotated(bgr, upright, 40.0)
    canvas = np.concatenate([bgr, turned], axis=1)
    shifted = moved + [bgr.shape[1], 0]
    aligner = FaceAligner(threads=1)
    boxes = np.stack([tight_box(upright), tight_box(shifted)])  # FaceAligner's 0-based pixels
    faces = aligner(canvas, boxes=boxes, channel_order="bgr")
    out = align_boxes(aligner.model, canvas, boxes + aligner.model.info.annotation_origin,
                      refine=2, straighten=True, early_stop=EARLY_STOP)
    assert out.passes.tolist() == [2, 3]
    for face in faces:
        assert np.isfinite(face.landmarks).all() and np.isfinite(face.pose).all() and np.isfinite(face.quality)
    # the reference points are the model's own answer from another start (conftest.astronaut);
    # the narrow-jitter default (2026-12-03) lands 1.3 % from them from this crop (the previous, < 1)
    assert inter_ocular_nme(faces[0].landmarks, upright) < 1.6
    assert inter_ocular_nme(faces[1].landmarks, shifted) < 2.0
    assert not faces[0].flagged and not faces[1].flagged
