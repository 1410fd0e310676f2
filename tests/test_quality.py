"""The learned quality score: its formula, its coefficients in model.json and the error head in the graph."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from conftest import template_face

from asmnet.api import FaceAligner
from asmnet.errors import ModelError
from asmnet.geometry import tight_box
from asmnet.inference import DEFAULT_REFINE, align_boxes, model_quality_kind
from asmnet.markup import IBUG_68
from asmnet.quality import LEARNED_KINDS, QualityModel, QualityTerms, learned_kind
from asmnet.runtime import DEFAULT_MODEL_DIR, LandmarkModel, ModelInfo, load_model
from asmnet.shape_model import ShapeModel

TERMS = {"intercept": 0.06, "error": 0.95, "move": 0.05, "move_offset": 0.05}


def document(**kinds) -> dict:
    return {"version": 1, "kinds": kinds or {"learned2": dict(TERMS)}}


def test_score_grows_with_each_signal_and_reads_as_an_nme():
    terms = QualityTerms(**TERMS)
    errors = np.log(np.array([1.0, 2.0, 4.0, 8.0, 30.0]))
    moves = np.array([0.0, 0.1, 1.0, 5.0, 80.0])
    grid = terms.score(errors[:, None] + 0 * moves, moves[None, :] + 0 * errors[:, None])
    assert np.all(np.diff(grid, axis=0) > 0) and np.all(np.diff(grid, axis=1) > 0)
    # no move term: exactly exp(intercept + error * e); a head that says ln 4 % and no move reads about 4 %
    plain = QualityTerms(0.0, 1.0)
    assert plain.score(np.log([4.0]), None)[0] == pytest.approx(4.0)
    assert terms.score(np.log([4.0]), None)[0] == pytest.approx(np.exp(0.06 + 0.95 * np.log(4.0)))
    # finite for any finite input
    assert np.isfinite(terms.score(np.array([1e6]), np.array([1e300]))).all()


def test_quality_model_round_trips_through_json():
    qm = QualityModel.from_json(document(learned0={"intercept": 0.0, "error": 1.0},
                                         learned2=dict(TERMS)), "model.json")
    assert set(qm.kinds) == {"learned0", "learned2"}
    again = QualityModel.from_json(json.loads(json.dumps(qm.to_json())), "model.json")
    assert again.kinds == qm.kinds
    assert QualityModel.from_json(None, "model.json") is None
    assert [learned_kind(r) for r in (0, 1, 2, 5)] == ["learned0", "learned1", "learned2", "learned2"]


@pytest.mark.parametrize("bad, match", [
    ({"learned2": {**TERMS, "error": 0.0}}, "error must be > 0"),
    ({"learned2": {**TERMS, "error": -1.0}}, "error must be > 0"),
    ({"learned2": {**TERMS, "move": -0.1}}, "move must be >= 0"),
    ({"learned2": {**TERMS, "move_offset": 0.0}}, "move_offset must be > 0"),
    ({"learned2": {**TERMS, "intercept": float("nan")}}, "finite number"),
    ({"learned2": {**TERMS, "error": True}}, "finite number"),
    ({"learned2": {**TERMS, "error": "1"}}, "finite number"),
    ({"learned2": {k: v for k, v in TERMS.items() if k != "error"}}, "finite number"),
    ({"learned2": {**TERMS, "scale": 2.0}}, "unknown field"),
    ({"refine2": dict(TERMS)}, "unknown kind"),
    ({"learned0": dict(TERMS)}, "learned0 has a move term"),
    ({"learned1": [1, 2]}, "must be an object"),
])
def test_bad_coefficients_are_refused(bad, match):
    with pytest.raises(ModelError, match=match):
        QualityModel.from_json(document(**bad), "model.json")


@pytest.mark.parametrize("data, match", [
    ([], "must be an object"), ({"version": 2, "kinds": {"learned2": TERMS}}, "version"),
    ({"version": 1, "kinds": {}}, "non-empty"), ({"version": 1, "kinds": {"learned2": TERMS}, "fitted": 3}, "fitted"),
])
def test_malformed_quality_model_is_refused(data, match):
    with pytest.raises(ModelError, match=match):
        QualityModel.from_json(data, "model.json")


def test_the_shipped_default_scores_with_its_error_head(astronaut):
    model = load_model(None, threads=1)
    assert model.has_error and model.info.quality_model is not None
    assert set(model.info.quality_model.kinds) == set(LEARNED_KINDS)
    assert set(LEARNED_KINDS) <= set(model.info.quality_thresholds)
    aligner = FaceAligner(threads=1)
    assert aligner.quality_kind == "learned2" == model_quality_kind(model, DEFAULT_REFINE, False)
    assert aligner.quality_threshold == model.info.quality_thresholds["learned2"] == model.info.quality_threshold
    bgr, upright = astronaut
    box = tight_box(upright)[None] + model.info.label_origin  # align_boxes: the annotations' convention
    out = align_boxes(model, bgr, box, refine=DEFAULT_REFINE, straighten=True)
    # the move score stays available beside the learned one, which is built from it and the head
    assert set(out.scores) == {"refine2", "learned2"} and out.quality_kind == "learned2"
    assert out.quality[0] == out.scores["learned2"][0]
    assert out.quality[0] == pytest.approx(model.info.quality_model.score("learned2", out.error, out.scores["refine2"])[0])
    assert 1.0 < out.quality[0] < 8.0  # an easy frontal face: a small estimated NME


def test_torch_backend_falls_back_to_the_move_score():
    pytest.importorskip("torch")
    if not (DEFAULT_MODEL_DIR / "weights.pt").exists():
        pytest.skip("the shipped model has no weights.pt")
    model = load_model(None, backend="torch", threads=1)
    assert not model.has_error and model_quality_kind(model, DEFAULT_REFINE, False) == "refine2"


def test_error_head_leaves_landmarks_and_pose_bit_identical():
    from asmnet.packaging.error_head import error_head_weights, expose_features, strip_error_head

    graph = onnx.load(str(DEFAULT_MODEL_DIR / "model.onnx"))
    weight, bias = error_head_weights(graph)
    import onnxruntime as ort

    crops = np.random.default_rng(3).integers(0, 256, (4, 3, 128, 128)).astype(np.float32)
    with_head = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    bare = ort.InferenceSession(strip_error_head(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    feats = ort.InferenceSession(expose_features(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    points, pose, error = with_head.run(None, {"image": crops})
    points0, pose0 = bare.run(None, {"image": crops})
    assert np.array_equal(points, points0) and np.array_equal(pose, pose0)
    f = feats.run(None, {"image": crops})[2]
    assert error.shape == (4, 1)
    assert np.allclose(error[:, 0], f @ weight + bias, rtol=1e-4, atol=1e-4)


def _package(tmp_path, graph=None):
    package = tmp_path / "pkg"
    shutil.copytree(DEFAULT_MODEL_DIR, package, ignore=shutil.ignore_patterns("weights.pt"))
    if graph is not None:
        onnx.save(graph, str(package / "model.onnx"))
    return package


def test_quality_model_without_the_graphs_error_output_is_refused_at_load(tmp_path):
    from asmnet.packaging.error_head import strip_error_head

    package = _package(tmp_path, strip_error_head(onnx.load(str(DEFAULT_MODEL_DIR / "model.onnx"))))
    with pytest.raises(ModelError, match="no 'error' output"):
        load_model(package)
    # without the coefficients the same graph loads and scores with the second look's move
    meta = json.loads((package / "model.json").read_text())
    meta.pop("quality_model")
    (package / "model.json").write_text(json.dumps(meta))
    model = load_model(package)
    assert not model.has_error and model_quality_kind(model, DEFAULT_REFINE, False) == "refine2"


def test_bad_coefficients_in_model_json_are_refused_at_load(tmp_path):
    package = _package(tmp_path)
    meta = json.loads((package / "model.json").read_text())
    meta["quality_model"]["kinds"]["learned2"]["move"] = -0.5
    (package / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="move must be >= 0"):
        FaceAligner(package)


def test_a_third_output_that_is_not_the_error_head_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = onnx.load(str(DEFAULT_MODEL_DIR / "model.onnx"))
    for o in list(graph.graph.output) + [n for n in graph.graph.node if "error" in n.output]:
        if isinstance(o, onnx.ValueInfoProto):
            o.name = "confidence"  # a third output of another meaning
        else:
            o.output[:] = ["confidence"]
    package = _package(tmp_path, graph)
    with pytest.raises(ModelError, match="optionally 'error'"):
        load_model(package)
    graph = onnx.load(str(DEFAULT_MODEL_DIR / "model.onnx"))
    graph.graph.node.append(helper.make_node("Identity", ["pose"], ["extra"]))  # a fourth output
    graph.graph.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", 3]))
    with pytest.raises(ModelError, match="ONNX outputs"):
        load_model(_package(tmp_path / "b", graph))


class NanErrorStub(LandmarkModel):
    """A network whose error head answers NaN."""

    backend = "stub"
    has_error = True

    def __init__(self):
        sm = ShapeModel(template_face().reshape(-1) - 0.5, np.eye(136)[:, :2], np.ones(2), 0.9, 0.9, 2)
        self.info = ModelInfo("stub", 64, 1.3, IBUG_68, sm)

    def _forward(self, batch):
        k = len(batch)
        return np.zeros((k, 136), np.float32), np.zeros((k, 3), np.float32), np.full((k, 1), np.nan, np.float32)


def test_nan_from_the_error_head_is_a_model_error():
    with pytest.raises(ModelError, match="NaN"):
        NanErrorStub().predict(np.zeros((2, 64, 64, 3), np.uint8))


@pytest.mark.parametrize("name", ["default", "default-fp32"])
def test_misplaced_and_turned_boxes_are_flagged(astronaut, name):
    """Each shipped model with an error head flags a box moved off the face and a face turned
    upside down in an upright box, and not the face itself: its thresholds were measured for its
    own learned scores (a package once kept a move-score threshold under its learned score and
    flagged every face)."""
    model = load_model(name, threads=1)
    assert model.info.quality_model is not None and set(LEARNED_KINDS) <= set(model.info.quality_thresholds)
    assert all(model.info.quality_thresholds[kind] > 2.0 for kind in LEARNED_KINDS)  # estimated NMEs, in %
    bgr, upright = astronaut
    aligner = FaceAligner(model=name, threads=1)
    box = tight_box(upright)
    side = box[2] - box[0]
    good = aligner(bgr, boxes=[box], channel_order="bgr")[0]
    assert not good.flagged
    moved = aligner(bgr, boxes=[box + [0, 1.6 * side, 0, 1.6 * side]], channel_order="bgr")[0]
    upside_down = aligner(np.ascontiguousarray(bgr[::-1]), channel_order="bgr",
                          boxes=[[box[0], bgr.shape[0] - 1 - box[3], box[2], bgr.shape[0] - 1 - box[1]]])[0]
    assert moved.flagged and upside_down.flagged
    assert min(moved.quality, upside_down.quality) > 2 * good.quality
