"""End to end on a tiny synthetic set: training learns, checkpoints resume exactly, export and
evaluation agree, and the CLI reports errors in one line."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_train_config

from asmnet.cli import main
from asmnet.errors import ModelError
from asmnet.nn.checkpoint import load_checkpoint
from asmnet.training.augment import AugmentConfig
from asmnet.training.config import TrainConfig
from asmnet.training.trainer import Run, train

pytestmark = pytest.mark.slow  # a training run / subprocesses: left out of pytest -m "not slow"


def config(data, out, epochs=2, **kw) -> TrainConfig:
    return tiny_train_config(data, out, augment=AugmentConfig.none().to_dict() | {"flip_prob": 0.5}, epochs=epochs, **kw)


@pytest.fixture(scope="module")
def trained(synthetic_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    train(config(synthetic_set, out))
    return out


def test_training_learns_and_writes_its_run_folder(trained):
    history = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2
    assert history[1]["train"]["total"] < history[0]["train"]["total"]
    for name in ("last.pt", "best.pt", "curves.png", "model_card.json", "split.json", "config.json"):
        assert (trained / name).stat().st_size > 0, name
    card = json.loads((trained / "model_card.json").read_text())
    assert card["seed"] == 0 and card["split"]["n_val"] > 0 and "val_nme" in card["best"]
    # every epoch also measures crops taken from the network's own points
    assert all(h["val_nme_recrop"] > 0 and set(h["val_nme_recrop_per_folder"]) == set(h["val_nme_per_folder"])
               for h in history)
    ckpt = load_checkpoint(trained / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["shape_model"]["components"]


def test_resume_ends_where_an_uninterrupted_run_ends(synthetic_set, trained, tmp_path):
    out = tmp_path / "stopped"
    train(config(synthetic_set, out), stop_after=1)  # as if killed after epoch 1's checkpoint
    assert load_checkpoint(out / "last.pt")["epoch"] == 0
    train(config(synthetic_set, out), resume=True)
    a = load_checkpoint(trained / "last.pt")["state_dict"]
    b = load_checkpoint(out / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(h)["epoch"] for h in history] == [0, 1]


def test_truncated_checkpoint_is_reported(trained, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes((trained / "last.pt").read_bytes()[:1000])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_checkpoint(bad)
    assert main(["evaluate", "--data", "nowhere", "--model", str(bad)]) == 2


def test_export_matches_torch_and_evaluates(trained, synthetic_set, tmp_path, capsys):
    pkg = tmp_path / "pkg"
    assert main(["export", "--model", str(trained / "best.pt"), "--out", str(pkg)]) == 0
    assert "max abs difference" in capsys.readouterr().out
    out_json = tmp_path / "eval.json"
    rc = main(["evaluate", "--data", str(synthetic_set), "--model", str(pkg), "--json", str(out_json),
               "--ced", str(tmp_path / "ced.png")])
    assert rc == 0
    res = json.loads(out_json.read_text())
    for key in ("n", "nme_mean", "nme_median", "fr_0.08", "fr_0.10", "auc_0.08", "auc_0.10", "pose_mae", "per_image"):
        assert key in res
    assert res["n"] == 64 and set(res["pose_mae"]) == {"yaw", "pitch", "roll"}
    assert {"image", "nme"} <= set(res["per_image"][0]) and (tmp_path / "ced.png").stat().st_size > 0
    # the torch backend on the checkpoint gives the same numbers as ONNX Runtime
    out2 = tmp_path / "eval_torch.json"
    main(["evaluate", "--data", str(synthetic_set), "--model", str(trained / "best.pt"), "--json", str(out2)])
    assert json.loads(out2.read_text())["nme_mean"] == pytest.approx(res["nme_mean"], abs=1e-3)


def test_info_prints_the_paper_size(capsys):
    assert main(["info", "--points", "68", "--input-size", "224"]) == 0
    out = capsys.readouterr().out
    params = int(out.split("parameters: ")[1].split(" ")[0].replace(",", ""))
    assert abs(params - 1.43e6) / 1.43e6 < 0.05


def test_missing_data_is_one_line_error(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("asmnet: error:") and "none" in err[0]


def test_prediction_shapes_from_the_api(trained, synthetic_set, tmp_path):
    from asmnet import FaceAligner
    from asmnet.formats import read_pts

    aligner = FaceAligner(model=trained / "best.pt")
    image = sorted(synthetic_set.glob("*.png"))[0]
    gt = read_pts(image.with_suffix(".pts"))
    box = [gt[:, 0].min(), gt[:, 1].min(), gt[:, 0].max(), gt[:, 1].max()]
    faces = aligner(str(image), boxes=[box, box])
    assert len(faces) == 2 and faces[0].landmarks.shape == (68, 2) and faces[0].pose.shape == (3,)
    assert np.allclose(faces[0].landmarks, faces[1].landmarks)
    assert json.dumps(faces[0].to_dict())


def test_int8_export_is_close_to_float(trained, synthetic_set, tmp_path, capsys):
    pkg = tmp_path / "pkg"
    rc = main(["export", "--model", str(trained / "best.pt"), "--out", str(pkg), "--int8",
               "--calib-data", str(synthetic_set), "--calib-count", "16"])
    assert rc == 0 and "INT8 model" in capsys.readouterr().out
    results = {}
    for name in ("pkg", "pkg-int8"):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--data", str(synthetic_set), "--model", str(tmp_path / name), "--json", str(out)]) == 0
        results[name] = json.loads(out.read_text())["nme_mean"]
    assert (tmp_path / "pkg-int8" / "model.onnx").stat().st_size < (pkg / "model.onnx").stat().st_size
    assert abs(results["pkg-int8"] - results["pkg"]) < 0.1 * results["pkg"]  # within 10 % of float


def test_int8_export_calibrates_on_the_runs_own_training_faces(trained, tmp_path, capsys):
    from asmnet.nn.checkpoint import save_checkpoint

    rc = main(["export", "--model", str(trained / "best.pt"), "--out", str(tmp_path / "pkg"), "--int8",
               "--calib-count", "8", "--name", "mine"])
    out = capsys.readouterr().out
    assert rc == 0 and "INT8 calibration: the run's training faces" in out and "calibrated on 8 faces" in out
    assert (tmp_path / "pkg-int8" / "model.onnx").exists()
    # --name names both packages (the folders keep OUT's name)
    names = [json.loads((tmp_path / d / "model.json").read_text())["name"] for d in ("pkg", "pkg-int8")]
    assert names == ["mine", "mine-int8"]
    # a checkpoint whose training folders are gone asks for --calib-data, before exporting anything
    ckpt = load_checkpoint(trained / "best.pt")
    ckpt["train_config"]["data"] = [str(tmp_path / "gone")]
    save_checkpoint(tmp_path / "moved.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    assert main(["export", "--model", str(tmp_path / "moved.pt"), "--out", str(tmp_path / "pkg2"), "--int8"]) == 2
    err = capsys.readouterr().err
    assert "moved.pt names no training data" in err and "--calib-data" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pkg2").exists()


def test_int8_outputs_are_float_and_close_to_the_float_model(trained, synthetic_set, tmp_path):
    """Calibrated on 4 faces, run on 64 faces, their negatives, noise and shifted crops: the outputs
    are float (8-bit outputs clamped every value outside the calibrated range and rounded the rest
    to a grid), close to the float model's; an old INT8 graph is repaired by float_head."""
    import onnx

    from asmnet.formats import load_many
    from asmnet.geometry import tight_box
    from asmnet.inference import crop_faces
    from asmnet.packaging.export import export_model
    from asmnet.packaging.quantize import FLOAT_OPS, float_head, quantize_package, quantized_outputs
    from asmnet.runtime import load_model

    pkg, int8 = tmp_path / "pkg", tmp_path / "pkg-int8"
    export_model(trained / "best.pt", pkg)
    # two epochs leave the heads near the mean face: random heads make the outputs vary between
    # crops, so that a grid or a clamp would show
    graph_file = onnx.load(str(pkg / "model.onnx"))
    heads = {n.input[1] for n in graph_file.graph.node if n.op_type == "Gemm"}
    rng = np.random.default_rng(0)
    for init in graph_file.graph.initializer:
        if init.name in heads:
            w = rng.normal(size=tuple(init.dims)) * 3.0 / np.sqrt(init.dims[1])
            init.CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), init.name))
    onnx.save(graph_file, str(pkg / "model.onnx"))
    records = load_many([synthetic_set])[0]
    quantize_package(pkg, int8, records, count=4)
    assert quantized_outputs(int8 / "model.onnx") == []
    float_model, int8_model = load_model(pkg), load_model(int8)
    crops = np.concatenate([crop_faces(cv2.imread(str(r.image)), tight_box(r.points)[None], float_model.info)[0]
                            for r in records])
    noise = np.random.default_rng(1).integers(0, 256, crops.shape, dtype=np.uint8)
    crops = np.concatenate([crops, 255 - crops, noise, np.roll(crops, 12, axis=2)])
    (uf, pf), (uq, pq) = float_model.run(crops), int8_model.run(crops)
    for got, ref in ((uq, uf), (pq, pf)):  # backbone noise only
        assert np.abs(got - ref).max() < 0.05 * (ref.max() - ref.min())
    # float outputs: no grid, every crop its own value
    # (two of 256 float32 values may meet by chance: a grid collapses dozens)
    assert all(len(np.unique(pq[:, j])) >= len(crops) - 2 for j in range(3))
    assert all(len(np.unique(uq[i, :, 0])) == uq.shape[1] for i in range(len(crops)))

    # an INT8 graph made before (8-bit outputs) is repaired in place by float_head
    old = onnx.load(str(int8 / "model.onnx"))
    node = next(n for n in old.graph.node if n.op_type == "Gemm" and n.output[0] == "landmarks")
    node.output[0] = "head_float"
    scale = onnx.helper.make_tensor("s", onnx.TensorProto.FLOAT, [], [float(np.abs(uf).max() / 127)])
    zero = onnx.helper.make_tensor("z", onnx.TensorProto.UINT8, [], [128])
    old.graph.initializer.extend([scale, zero])
    old.graph.node.extend([onnx.helper.make_node("QuantizeLinear", ["head_float", "s", "z"], ["head_q"]),
                           onnx.helper.make_node("DequantizeLinear", ["head_q", "s", "z"], ["landmarks"])])
    onnx.save(old, str(int8 / "model.onnx"))
    assert quantized_outputs(int8 / "model.onnx") == ["landmarks"]
    assert len(np.unique(load_model(int8).run(crops)[0][:, :, 0])) < uq[..., 0].size // 4  # on a grid
    assert float_head(old) == 2 and "Gemm" in FLOAT_OPS
    onnx.save(old, str(int8 / "model.onnx"))
    assert quantized_outputs(int8 / "model.onnx") == []
    assert np.array_equal(load_model(int8).run(crops)[0], uq)


def test_flip_tta_unflips_points_and_pose():
    """A network that sees every crop the same way returns a symmetric face: averaging it with its
    mirror (points re-ordered by the flip table, x negated) must give it back; yaw and roll cancel."""
    from conftest import template_face

    from asmnet.inference import predict_crops
    from asmnet.markup import IBUG_68
    from asmnet.runtime import LandmarkModel, ModelInfo
    from asmnet.shape_model import ShapeModel

    face = template_face() - 0.5  # left-right symmetric about x = 0

    class Constant(LandmarkModel):
        backend = "fake"

        def __init__(self):
            sm = ShapeModel(face.reshape(-1), np.eye(136)[:, :2], np.ones(2), 0.9, 0.9, 2)
            self.info = ModelInfo("fake", 64, 1.3, IBUG_68, sm)

        def _forward(self, batch):
            return np.repeat(face.reshape(1, -1), len(batch), 0), np.tile([10.0, 5.0, 3.0], (len(batch), 1))

    crops = np.zeros((3, 64, 64, 3), np.uint8)
    units, pose, _ = predict_crops(Constant(), crops, flip_tta=True)
    assert np.allclose(units, face, atol=1e-9)
    assert np.allclose(pose, [0.0, 5.0, 0.0])


def test_oversampled_faces_are_drawn_again_with_other_augmentations():
    from asmnet.markup import markup_for
    from asmnet.training.data import FaceDataset, FaceRegion

    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(20, 80, 68), rng.uniform(20, 80, 68)], 1)
    regions = [FaceRegion(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8), pts, None) for _ in range(2)]
    plain = FaceDataset(regions, 32, markup_for(68), AugmentConfig())
    twice = FaceDataset(regions, 32, markup_for(68), AugmentConfig(), repeats=[1, 2])
    assert len(plain) == 2 and len(twice) == 3 and twice.sources == [0, 1, 1]
    # items of the regions drawn once are the very samples a plain run draws
    assert all(torch.equal(a, b) for a, b in zip(plain[(0, 4)][:2], twice[(0, 4)][:2]))  # pose: NaN
    assert not torch.equal(twice[(1, 4)][1], twice[(2, 4)][1])  # the copy has its own augmentation
    with pytest.raises(ValueError, match="one count"):
        FaceDataset(regions, 32, markup_for(68), AugmentConfig(), repeats=[1, 0])


def test_oversample_option_names_a_data_folder(synthetic_set, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["train", "--data", str(synthetic_set), "--out", str(out), "--epochs", "1", "--input-size", "64",
            "--width", "0.5", "--batch-size", "4", "--workers", "0", "--device", "cpu"]
    assert main(args + ["--oversample", "lfpw_train=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no training faces come from a folder named 'lfpw_train'" in err[0]
    assert main(args + ["--oversample", "synth=x"]) == 2
    assert "expected FOLDER=N" in capsys.readouterr().err
    run = Run(config(synthetic_set, out, oversample={synthetic_set.name: 2}))
    assert len(run.dataset) == 2 * len(run.train_regions)


def test_init_fine_tunes_the_shipped_model_by_name(synthetic_set, tmp_path, capsys):
    from asmnet.runtime import DEFAULT_MODEL_DIR, load_model

    if not (DEFAULT_MODEL_DIR / "weights.pt").exists():
        pytest.skip("the shipped model has no weights.pt")
    args = ["train", "--data", str(synthetic_set), "--out", str(tmp_path / "ft"), "--epochs", "1", "--input-size", "64",
            "--batch-size", "16", "--workers", "0", "--device", "cpu", "--lr", "1e-4", "--init", "default"]
    assert main(args) == 0
    assert "initialised from default" in capsys.readouterr().err
    ckpt = load_checkpoint(tmp_path / "ft" / "best.pt")
    shipped = load_model(None).info.shape_model
    assert np.allclose(ckpt["shape_model"]["mean"], shipped.mean)  # the shipped shape model is kept
    assert main(args[:-1] + ["default", "--width", "0.5", "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("asmnet: error: --init default: its network has width 1.0, this run 0.5")


def _all_tensors(ckpt: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint (weights, optimiser moments, RNG states ...) by its path."""
    out: dict[str, torch.Tensor] = {}
    items = ckpt.items() if isinstance(ckpt, dict) else enumerate(ckpt) if isinstance(ckpt, (list, tuple)) else []
    for k, v in items:
        if isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
        else:
            out.update(_all_tensors(v, f"{prefix}{k}/"))
    return out


def test_resume_is_exact_with_dataloader_workers(synthetic_set, trained, tmp_path):
    """Issue 14.3: with worker processes (the default --workers 2) a stopped and resumed run ends
    with every tensor of an uninterrupted one, and the workers change nothing at all: both equal
    the run made with --workers 0."""
    fresh, stopped = tmp_path / "fresh", tmp_path / "stopped"
    train(config(synthetic_set, fresh, workers=2))
    train(config(synthetic_set, stopped, workers=2), stop_after=1)
    train(config(synthetic_set, stopped, workers=2), resume=True)
    a, b = _all_tensors(load_checkpoint(fresh / "last.pt")), _all_tensors(load_checkpoint(stopped / "last.pt"))
    assert a.keys() == b.keys() and len(a) > 100
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    c = _all_tensors(load_checkpoint(trained / "last.pt"))
    assert [k for k in a if not torch.equal(a[k], c[k])] == []


def _one_line(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_nan_weights_are_refused_by_train_init_and_export(synthetic_set, trained, tmp_path, capsys):
    """Issue 14.8: a checkpoint whose weights hold NaN is one line and status 2 wherever it is
    given; export writes nothing."""
    from asmnet.nn.checkpoint import save_checkpoint

    ckpt = load_checkpoint(trained / "last.pt")
    ckpt["state_dict"]["landmark_head.bias"][3] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    with pytest.raises(ModelError, match="NaN"):
        load_checkpoint(tmp_path / "nan.pt")
    rc = main(["train", "--data", str(synthetic_set), "--out", str(tmp_path / "run"), "--init", str(tmp_path / "nan.pt"),
               "--input-size", "64", "--width", "0.5", "--workers", "0", "--device", "cpu", "--epochs", "1"])
    err = _one_line(capsys)
    assert rc == 2 and len(err) == 1 and "nan.pt: weights hold NaN" in err[0], err
    rc = main(["export", "--model", str(tmp_path / "nan.pt"), "--out", str(tmp_path / "pkg")])
    err = _one_line(capsys)
    assert rc == 2 and len(err) == 1 and "NaN" in err[0] and not (tmp_path / "pkg").exists(), err


def test_resume_from_a_last_pt_of_another_shape_is_one_line(synthetic_set, trained, tmp_path, capsys):
    from asmnet.nn.checkpoint import save_checkpoint

    ckpt = load_checkpoint(trained / "last.pt")
    ckpt["train_config"]["width"] = 1.0  # its weights are of width 0.5
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "last.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    rc = main(["train", "--data", str(synthetic_set), "--out", str(tmp_path / "run"), "--resume", "--workers", "0",
               "--device", "cpu"])
    err = [line for line in _one_line(capsys) if line.startswith("asmnet: ")]
    assert rc == 2 and len(err) == 1 and "last.pt: does not fit the run it was saved with" in err[0], err
    # fine-tuning weights of another width: one line too
    rc = main(["train", "--data", str(synthetic_set), "--out", str(tmp_path / "other"), "--init",
               str(trained / "last.pt"), "--input-size", "64", "--workers", "0", "--device", "cpu"])
    err = [line for line in _one_line(capsys) if line.startswith("asmnet: ")]
    assert rc == 2 and len(err) == 1 and "its network has width 0.5, this run 1.0" in err[0], err


def test_model_json_is_checked_at_load_and_json_never_holds_nan(tmp_path):
    """Issue 14.8 / 14.12: a NaN shape model or an impossible model.json field fails at load
    (not as an "unexpected error" per image); records never carry a NaN token."""
    import shutil

    from asmnet.fileio import json_text
    from asmnet.runtime import DEFAULT_MODEL_DIR, load_model

    good = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    for change, words in [(lambda d: d["shape_model"]["mean"].__setitem__(0, float("nan")), "NaN"),
                          (lambda d: d.__setitem__("quality_threshold", "high"), "quality_threshold"),
                          (lambda d: d.__setitem__("input_size", 0), "input_size"),
                          (lambda d: d.__setitem__("crop_scale", -1), "crop_scale"),
                          (lambda d: d.__setitem__("input_size", 12.5), "malformed")]:
        pkg = tmp_path / "pkg"
        shutil.rmtree(pkg, ignore_errors=True)
        shutil.copytree(DEFAULT_MODEL_DIR, pkg)
        data = json.loads(json.dumps(good))
        change(data)
        (pkg / "model.json").write_text(json.dumps(data))
        with pytest.raises(ModelError, match=words):
            load_model(pkg)
    assert json_text({"quality": float("nan"), "pose": [1.0, float("inf")]}) == '{"quality": null, "pose": [1.0, null]}'


def test_export_to_an_unwritable_folder_is_one_line(trained, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    rc = main(["export", "--model", str(trained / "best.pt"), "--out", str(tmp_path / "a_file" / "pkg")])
    err = _one_line(capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"asmnet: error: {tmp_path / 'a_file' / 'pkg'}"), err
