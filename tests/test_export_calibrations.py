"""`asmnet export` gives every package detector box calibrations: the shipped ones when the
model's reference box is theirs, else fitted on the run's training faces."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="export needs PyTorch")

from asmnet.detection import BoxCalibration, Detection, to_reference_box  # noqa: E402
from asmnet.errors import ModelError  # noqa: E402
from asmnet.formats import load_many  # noqa: E402
from asmnet.geometry import tight_box  # noqa: E402
from asmnet.markup import markup_for  # noqa: E402
from asmnet.packaging.export import fit_calibrations, package_calibrations, shipped_calibrations  # noqa: E402
from asmnet.runtime import DEFAULT_MODEL_DIR, read_model_json  # noqa: E402

TRUTH = BoxCalibration(dx=0.02, dy=0.1, scale=0.9, n=0, miss_rate=0.0, aspect=1.0)


class ShiftedBoxes:
    """A stand-in detector whose box is the face's tight box moved and enlarged by a known amount."""

    name = "shifted"

    def options(self):
        return {}

    def __init__(self, faces):
        self.faces = faces

    def detect(self, image):
        # the face is the one whose image has this content: find it by the drawn pixels' sum
        face = next(f for f in self.faces if f._sum == int(image.sum()))
        ref = tight_box(face.points)
        c, size = (ref[:2] + ref[2:]) / 2, max(ref[2] - ref[0], ref[3] - ref[1])
        side = size / TRUTH.scale
        centre = c - np.array([TRUTH.dx, TRUTH.dy]) * side
        return [Detection(np.concatenate([centre - side / 2, centre + side / 2]), 1.0)]


def test_a_68_point_model_in_the_pts_convention_carries_the_shipped_calibrations():
    info = read_model_json(DEFAULT_MODEL_DIR / "model.json")
    calibrations, source = package_calibrations(info, faces=None)
    assert source["kind"] == "shipped" and calibrations == shipped_calibrations()
    assert "dlib-hog" in calibrations and "68 iBUG points" in source["why"]


def test_other_models_need_training_faces_and_say_so():
    info = read_model_json(DEFAULT_MODEL_DIR / "model.json")
    info.annotation_origin = 0.0
    with pytest.raises(ModelError, match="no training faces: pass --calib-data"):
        package_calibrations(info, faces=[])
    info.markup = markup_for(98)
    with pytest.raises(ModelError, match="98 points"):
        package_calibrations(info, faces=None)


def test_fitted_calibrations_recover_a_known_box_mapping(synthetic_set):
    from asmnet.formats import read_image

    faces = load_many([str(synthetic_set)])[0][:20]
    for f in faces:
        f._sum = int(read_image(f.image).sum())
    fitted, skipped = fit_calibrations(faces, {"shifted": ShiftedBoxes(faces)}, count=20)
    assert not skipped
    assert fitted["shifted"]["detector"] == "shifted"
    got = BoxCalibration.from_dict(fitted["shifted"]["calibration"])
    for f in faces[:5]:
        det = ShiftedBoxes(faces).detect(read_image(f.image))[0]
        np.testing.assert_allclose(to_reference_box(det, got)[[0, 2]], tight_box(f.points)[[0, 2]], atol=0.6)
    assert got.n == 20 and got.miss_rate == 0.0
