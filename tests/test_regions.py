"""The region refiner: patch geometry, training that resumes exactly, the exported graphs, and the
``refine_regions`` switch of the API and the command line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_synthetic_set, template_face

from asmnet.errors import AsmnetError, ModelError
from asmnet.geometry import transform_points
from asmnet.markup import IBUG_68
from asmnet.regions import KINDS_68, RegionRefiner, load_refiner, mean_face, patch_matrix, template_pixels


def similarity(points: np.ndarray, scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    turn = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return points @ turn.T + np.asarray(shift)


def test_a_part_moved_by_a_similarity_is_framed_exactly_on_its_template():
    face = mean_face(np.stack([template_face() * 100, template_face() * 90 + 5]), IBUG_68)
    image_face = similarity(face, 80.0, 12.0, (200.0, 150.0))
    for kind in KINDS_68:
        template = template_pixels(kind, face)
        for indices, mirrored in kind.instances(IBUG_68):
            matrix = patch_matrix(image_face[indices], template, mirrored)
            placed = transform_points(image_face[indices], matrix)
            if mirrored:  # the right part, mirrored, lies on the left part's template
                np.testing.assert_allclose(placed, template, atol=0.5 * kind.size * 0.05)
            else:
                np.testing.assert_allclose(placed, template, atol=1e-6)
            assert np.linalg.det(matrix[:, :2]) * (-1 if mirrored else 1) > 0  # a mirror exactly when asked


def test_mean_face_has_unit_eye_distance_and_no_offset():
    shapes = np.stack([similarity(template_face(), s, a, (s, a)) for s, a in ((50, 0), (80, 10), (120, -20))])
    face = mean_face(shapes, IBUG_68)
    assert np.isclose(np.linalg.norm(face[45] - face[36]), 1.0)
    np.testing.assert_allclose(face.mean(0), 0.0, atol=1e-9)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A refiner trained for two epochs on synthetic faces, and the same run killed after one and resumed."""
    from asmnet.training.refiner import train_refiner
    from asmnet.training.refiner_config import RefinerConfig

    root = tmp_path_factory.mktemp("refiner")
    data = make_synthetic_set(root / "synth", 24, seed=5, size=128)

    def config(out: str, epochs: int, **more) -> RefinerConfig:
        settings = {"kinds": ["eye", "nose"], "batch_size": 16, "width": 4, "label_origin": 0.0, "val_fraction": 0.3,
                    "detector": "none", "select_kinds": False, **more}
        return RefinerConfig(data=[str(data)], out=str(root / out), epochs=epochs, **settings)

    summary = train_refiner(config("full", 2), log=lambda line: None)
    assert train_refiner(config("killed", 2), log=lambda line: None, stop_after=1) is None  # as if killed
    state = torch.load(root / "killed" / "eye.pt", weights_only=True)
    assert state["epoch"] == 1
    with pytest.raises(AsmnetError, match="--resume"):
        train_refiner(config("killed", 2), log=lambda line: None)
    with pytest.raises(AsmnetError, match=r"made with --width 4 --head pooled; resume it with those"):
        train_refiner(config("killed", 2, head="spatial"), resume=True, log=lambda line: None)
    train_refiner(config("killed", 2), resume=True, log=lambda line: None)
    # a second cascade stage, trained on the first one's output (which it measures again on its base)
    train_refiner(config("stage2", 1, kinds=["eye"], after=str(root / "full" / "refiner"), remeasure_earlier=True),
                  log=lambda line: None)
    with pytest.raises(AsmnetError, match="--after"):
        config("alone", 1, remeasure_earlier=True)
    return root, summary


def test_training_resumes_exactly(tiny_run):
    root, _ = tiny_run
    for kind in ("eye", "nose"):
        full = torch.load(root / "full" / f"{kind}.pt", weights_only=True)["state_dict"]
        resumed = torch.load(root / "killed" / f"{kind}.pt", weights_only=True)["state_dict"]
        assert full.keys() == resumed.keys()
        for name in full:
            assert torch.equal(full[name], resumed[name]), name


def test_exported_graphs_give_what_the_networks_gave(tiny_run):
    root, summary = tiny_run
    assert summary["onnx_max_difference_px"] < 1e-3
    refiner = RegionRefiner(root / "full" / "refiner")
    # only the kinds that lowered the validation NME are kept, each with its own smallest face
    assert {k.name: k.min_iod for k in refiner.kinds} == summary["kinds"]
    assert set(summary["kinds"]) == {"eye", "nose"}  # --no-select-kinds: every kind kept
    meta = json.loads((root / "full" / "refiner" / "refiner.json").read_text())
    assert meta["validation"]["faces"] == summary["faces"] > 0


def test_a_later_stage_measures_the_earlier_ones_again_on_its_base(tiny_run):
    root, summary = tiny_run
    first = json.loads((root / "stage2" / "refiner" / "refiner.json").read_text())["validation"]
    second = json.loads((root / "stage2" / "refiner" / "next" / "refiner.json").read_text())["validation"]
    assert first["earlier_base"] == {k: summary[k] for k in ("base", "before", "after")}
    # the same base here: measured again through the exported graphs, the rows are what training recorded
    for key in ("before", "after"):
        assert first[key].keys() == summary[key].keys()
        for part, value in summary[key].items():
            assert first[key][part] == pytest.approx(value, abs=2e-3)
    assert first["after"] == second["before"]  # the second stage started from the first one's output
    assert set(first["regions_before"]) == {name for name, _ in IBUG_68.regions}


def test_refine_moves_only_the_refined_parts_of_large_enough_faces(tiny_run):
    root, _ = tiny_run
    refiner = RegionRefiner(root / "full" / "refiner")
    refiner.kinds = [replace(k, min_iod=0.0) for k in refiner.kinds]
    image = np.full((160, 160, 3), 120, np.uint8)
    points = similarity(template_face(), 90.0, 0.0, (35.0, 30.0))[None]
    moved = refiner.refine([image], np.zeros(1, int), points, origin=0.0)
    touched = sorted(set(range(36, 48)) | set(range(27, 36)))
    untouched = [i for i in range(68) if i not in touched]
    np.testing.assert_array_equal(moved[0, untouched], points[0, untouched])
    assert np.all(np.isfinite(moved))
    refiner.kinds = [replace(k, min_iod=1e6) for k in refiner.kinds]  # every face below the limits: nothing moves
    np.testing.assert_array_equal(refiner.refine([image], np.zeros(1, int), points, origin=0.0), points)


def test_gray_rgb_and_bgr_pictures_give_the_same_refined_points(tiny_run):
    root, _ = tiny_run
    refiner = RegionRefiner(root / "full" / "refiner")
    refiner.kinds = [replace(k, min_iod=0.0) for k in refiner.kinds]
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 255, (160, 160), dtype=np.uint8)
    colour = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
    points = similarity(template_face(), 90.0, 5.0, (35.0, 30.0))[None]
    owner = np.zeros(1, int)
    np.testing.assert_array_equal(refiner.refine([gray], owner, points, 0.0),
                                  refiner.refine([np.stack([gray] * 3, -1)], owner, points, 0.0))
    np.testing.assert_array_equal(refiner.refine([colour], owner, points, 0.0, "bgr"),
                                  refiner.refine([np.ascontiguousarray(colour[..., ::-1])], owner, points, 0.0, "rgb"))


def test_a_broken_refiner_folder_is_one_line(tiny_run, tmp_path):
    import shutil

    root, _ = tiny_run
    folder = tmp_path / "refiner"
    shutil.copytree(root / "full" / "refiner", folder)
    (folder / "nose.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="nose.onnx: not a loadable ONNX graph"):
        RegionRefiner(folder)
    meta = json.loads((folder / "refiner.json").read_text())
    meta["kinds"][0]["min_iod"] = float("nan")
    (folder / "refiner.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="out of range"):
        RegionRefiner(folder)


def test_a_cascade_stage_refines_what_the_stage_before_it_gave(tiny_run, tmp_path):
    import shutil

    root, _ = tiny_run
    first = RegionRefiner(root / "full" / "refiner")
    cascade = RegionRefiner(root / "stage2" / "refiner")  # the first stage, copied, with next/ after it
    assert (first.stages, cascade.stages) == (1, 2)
    assert [k.name for k in cascade.next.kinds] == ["eye"]
    for refiner in (first, cascade, cascade.next):
        refiner.kinds = [replace(k, min_iod=0.0) for k in refiner.kinds]
    image = np.random.default_rng(3).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    points = similarity(template_face(), 90.0, 0.0, (35.0, 30.0))[None]
    once = first.refine([image], np.zeros(1, int), points, origin=0.0)
    np.testing.assert_allclose(cascade.refine([image], np.zeros(1, int), points, origin=0.0),
                               cascade.next.refine([image], np.zeros(1, int), once, origin=0.0))
    folder = tmp_path / "refiner"
    shutil.copytree(root / "stage2" / "refiner", folder)
    meta = json.loads((folder / "refiner.json").read_text())
    (folder / "refiner.json").write_text(json.dumps({**meta, "next": "../elsewhere"}))
    with pytest.raises(ModelError, match="'next' must be"):
        RegionRefiner(folder)


def test_a_model_without_a_refiner_says_so(tmp_path):
    from asmnet import FaceAligner

    with pytest.raises(ModelError, match="has no region refiner"):
        load_refiner("paper224")
    with pytest.raises(ModelError, match="has no region refiner"):
        FaceAligner("paper224", detector=None, refine_regions=True)


def test_the_shipped_accurate_model_is_default_plus_its_refiner(astronaut):
    from asmnet import FaceAligner

    image, _ = astronaut
    default = FaceAligner("default", refine_regions=False, threads=1)(image)
    plain = FaceAligner("accurate", refine_regions=False, threads=1)(image)
    aligner = FaceAligner("accurate", threads=1)
    refined = aligner(image)  # the package has a refiner: used
    assert len(default) == len(plain) == len(refined) == 1
    np.testing.assert_array_equal(plain[0].landmarks, default[0].landmarks)  # the same network
    assert aligner.refiner.stages >= 2 and aligner.refiner.shape is None  # part networks first
    assert any(stage.shape is not None for stage in _stages(aligner.refiner))  # then a shape regression
    # the first stage alone moves the parts of the kinds for a face of this size, only
    first = load_refiner("accurate")
    first.next = None
    parts_only = first.refine([image], np.zeros(1, int), plain[0].landmarks[None], aligner.pixel_origin)[0]
    moved = np.abs(parts_only - plain[0].landmarks).max(axis=1) > 0
    iod = np.linalg.norm(plain[0].landmarks[45] - plain[0].landmarks[36])  # 57 px here
    used = {k.name for k in first.kinds if k.min_iod <= iod}
    assert used  # a kind that a 57-px face gets
    parts = {"eye": range(36, 48), "brow": range(17, 27), "nose": range(27, 36), "mouth": range(48, 68),
             "jaw": range(0, 17)}
    assert np.flatnonzero(moved).tolist() == sorted(i for name in used for i in parts[name])
    assert np.abs(refined[0].landmarks - plain[0].landmarks).max() < 8.0  # a correction, not a new face
    assert refined[0].quality == plain[0].quality and refined[0].pose.tolist() == plain[0].pose.tolist()


def test_the_shipped_default_model_refines_with_its_shape_regression_only(astronaut):
    from asmnet import FaceAligner

    image, _ = astronaut
    refiner = load_refiner("default")
    assert refiner.kinds == [] and refiner.shape is not None and refiner.next is None
    plain = FaceAligner("default", refine_regions=False, threads=1)(image)[0]
    refined = FaceAligner("default", threads=1)(image)[0]
    np.testing.assert_allclose(refined.landmarks, refiner.shape.apply(plain.landmarks[None], 0.0)[0], atol=1e-9)
    assert 0 < np.abs(refined.landmarks - plain.landmarks).max() < 8.0
    assert refined.quality == plain.quality and refined.pose.tolist() == plain.pose.tolist()


def _stages(refiner):
    while refiner is not None:
        yield refiner
        refiner = refiner.next


def test_an_ensemble_stage_exports_the_mean_of_its_members(tiny_run):
    """The eye's graph of a spatial-head run averaged with a pooled-head run is the two networks' mean; the nose,
    left out of --ensemble-kinds, is this run's network alone."""
    from asmnet.nn.refiner import PatchNet
    from asmnet.training.refiner import train_refiner
    from asmnet.training.refiner_config import RefinerConfig

    root, _ = tiny_run
    full = root / "full"
    cfg = RefinerConfig(data=json.loads((full / "refiner_config.json").read_text())["data"], out=str(root / "ens"),
                        epochs=1, kinds=["eye", "nose"], batch_size=16, width=6, label_origin=0.0, val_fraction=0.3,
                        detector="none", select_kinds=False, seed=7, ensemble_with=[str(full)], ensemble_kinds=["eye"],
                        head="spatial")
    summary = train_refiner(cfg, log=lambda line: None)
    assert [(m["run"], m["width"], m["head"], m["epochs"], m["kinds"]) for m in summary["ensemble_with"]] == [
        (str(full), 4, "pooled", 2, ["eye"])]
    assert summary["onnx_max_difference_px"] < 1e-3
    patches = torch.from_numpy(np.random.default_rng(2).uniform(0, 255, (3, 3, 40, 40)).astype(np.float32))
    means = []
    for run, width, head in ((root / "ens", 6, "spatial"), (full, 4, "pooled")):  # members of any width and head
        net = PatchNet(6, width, head, 40)
        net.load_state_dict(torch.load(run / "eye.pt", weights_only=True)["state_dict"])
        means.append(net.eval()(patches).detach().numpy())
    import onnxruntime as ort

    graph = ort.InferenceSession(str(root / "ens" / "refiner" / "eye.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(graph.run(None, {"patches": patches.numpy()})[0], np.mean(means, 0), atol=1e-5)
    nose = PatchNet(9, 6, "spatial", 48)  # not in --ensemble-kinds: this run's network alone
    nose.load_state_dict(torch.load(root / "ens" / "nose.pt", weights_only=True)["state_dict"])
    patches = torch.from_numpy(np.random.default_rng(3).uniform(0, 255, (2, 3, 48, 48)).astype(np.float32))
    graph = ort.InferenceSession(str(root / "ens" / "refiner" / "nose.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(graph.run(None, {"patches": patches.numpy()})[0], nose.eval()(patches).detach().numpy(),
                               atol=1e-5)
    with pytest.raises(AsmnetError, match="--ensemble-kinds needs --ensemble-with"):
        replace(cfg, ensemble_with=[]).__post_init__()
    with pytest.raises(AsmnetError, match="one of this run's --kinds"):
        replace(cfg, ensemble_kinds=["jaw"]).__post_init__()


def test_an_ensemble_member_must_be_a_finished_run_of_every_kind(tiny_run, tmp_path):
    import shutil

    from asmnet.training.refiner import train_refiner
    from asmnet.training.refiner_config import RefinerConfig

    root, _ = tiny_run
    data = json.loads((root / "full" / "refiner_config.json").read_text())["data"]

    def run(member, out):
        cfg = RefinerConfig(data=data, out=str(tmp_path / out), epochs=1, kinds=["eye", "nose"], width=4,
                            label_origin=0.0, detector="none", ensemble_with=[str(member)])
        train_refiner(cfg, log=lambda line: None)

    with pytest.raises(AsmnetError, match=r"nose.pt: no nose network"):
        run(root / "stage2", "a")  # that run trained the eye only
    unfinished = tmp_path / "unfinished"
    shutil.copytree(root / "full", unfinished)
    state = torch.load(unfinished / "eye.pt", weights_only=True)
    torch.save({**state, "epoch": 1}, unfinished / "eye.pt")
    with pytest.raises(AsmnetError, match=r"eye.pt: unfinished \(1 of 2 epochs\)"):
        run(unfinished, "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # failed before writing anything


def test_a_spatial_head_reads_every_cell_of_the_last_map():
    from asmnet.nn.refiner import PatchNet, final_map_side

    for size, side in ((40, 3), (48, 3), (56, 4)):
        assert final_map_side(size) == side
        net = PatchNet(9, 4, "spatial", size).eval()
        features = net.features(torch.zeros(1, 3, size, size))
        assert features.shape[2:] == (side, side)
        assert net.head.in_features == features[0].numel()  # one weight per channel and cell
        assert net(torch.zeros(2, 3, size, size)).shape == (2, 18)
    assert PatchNet(9, 4).head.in_features == 64  # pooled: one per channel
    with pytest.raises(ValueError, match="patch size"):
        PatchNet(9, 4, "spatial")
    with pytest.raises(ValueError, match="head 'grid'"):
        PatchNet(9, 4, "grid")
