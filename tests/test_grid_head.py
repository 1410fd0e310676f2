"""The grid (pixel-in-pixel) landmark head: its decode, its cell term, and a grid model through
training, fine-tuning from a pooled model, export, INT8 and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_train_config
from torch import nn

from asmnet.cli import main
from asmnet.errors import AsmnetError, ModelError
from asmnet.nn import ASMNet, build_model, head_l2
from asmnet.nn.checkpoint import load_checkpoint, validate_checkpoint
from asmnet.nn.losses import ASMLoss, cell_targets
from asmnet.nn.model import GridHead, cell_centres
from asmnet.shape_model import ShapeModel
from asmnet.training.config import HEADS, TrainConfig
from asmnet.training.trainer import train


class _Fixed(nn.Module):
    """Stands in for the head's last conv: returns the given maps whatever it is fed."""

    def __init__(self, maps: torch.Tensor):
        super().__init__()
        self.maps = maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps


def _head_with_maps(maps: torch.Tensor, points: int) -> GridHead:
    head = GridHead(4, 4, points)
    head.fuse, head.out = nn.Identity(), _Fixed(maps)
    return head


def test_cell_centres_span_the_crop_row_major() -> None:
    cx, cy = cell_centres(2, 4, torch.float32, torch.device("cpu"))
    assert torch.allclose(cx, torch.tensor([-0.375, -0.125, 0.125, 0.375] * 2))
    assert torch.allclose(cy, torch.tensor([-0.25] * 4 + [0.25] * 4))


def test_a_peaked_score_gives_its_cell_centre_plus_offset() -> None:
    h = w = 4
    maps = torch.zeros(1, 3, h, w)  # one landmark: scores, x offsets, y offsets
    maps[0, 0, 2, 1] = 50.0  # row 2, column 1: centre (-0.125, 0.125)
    maps[0, 1, 2, 1], maps[0, 2, 2, 1] = 0.4, -0.2  # in cell widths (1/4 of the crop)
    maps[0, 1, 0, 0] = 9.0  # another cell's offset: ignored, its score is ~0
    points, logits = _head_with_maps(maps, 1)(torch.zeros(1, 4, h, w), torch.zeros(1, 4, 2, 2))
    assert points.shape == (1, 2) and logits.shape == (1, 1, h, w)
    assert torch.allclose(points, torch.tensor([[-0.125 + 0.1, 0.125 - 0.05]]), atol=1e-5)


def test_flat_scores_average_the_cells_estimates() -> None:
    maps = torch.zeros(2, 6, 2, 2)  # two landmarks
    maps[:, 2] = 0.5  # landmark 0: every cell says half a cell to the right
    points, _ = _head_with_maps(maps, 2)(torch.zeros(2, 4, 2, 2), torch.zeros(2, 4, 1, 1))
    # the cells' centres average to the crop centre; landmark 0 moves by 0.5 / 2 of the crop
    assert torch.allclose(points, torch.tensor([[0.25, 0.0, 0.0, 0.0]] * 2), atol=1e-6)


def test_cell_targets_pick_the_holding_cell_and_clamp_outside_points() -> None:
    points = torch.tensor([[-0.49, -0.49, 0.49, 0.49, 0.01, -0.01, 3.0, -3.0]])
    idx = cell_targets(points, 4, 4)
    assert idx.tolist() == [[0, 15, 1 * 4 + 2, 0 * 4 + 3]]


def _shape_model(points: int = 68) -> ShapeModel:
    rng = np.random.default_rng(0)
    shapes = rng.normal(0, 0.2, (50, 2 * points))
    return ShapeModel.fit(shapes, variance_share=0.9)


def test_cell_term_rewards_scores_on_the_right_cell() -> None:
    loss = ASMLoss(_shape_model(), kind="mse", point_loss="l1", cell_weight=1.0)
    points = torch.zeros(1, 136)  # every point at the crop centre: cell (2, 2) of 4x4 -> index 10
    pose = torch.full((1, 3), float("nan"))
    right, wrong = torch.zeros(1, 68, 4, 4), torch.zeros(1, 68, 4, 4)
    right[..., 2, 2], wrong[..., 0, 0] = 5.0, 5.0
    low, parts = loss(points, torch.zeros(1, 3), points, pose, 0, 10, None, right)
    high, _ = loss(points, torch.zeros(1, 3), points, pose, 0, 10, None, wrong)
    assert "cell" in parts and float(low) < 0.1 < float(high)
    no_term = ASMLoss(_shape_model(), kind="mse", point_loss="l1", cell_weight=0.0)
    _, parts = no_term(points, torch.zeros(1, 3), points, pose, 0, 10, None, wrong)
    assert "cell" not in parts


def test_grid_model_outputs_config_and_gradients() -> None:
    torch.manual_seed(0)
    model = ASMNet(head="grid").train()
    pixels = torch.rand(2, 3, 64, 64) * 255
    points, pose, logits = model(pixels)
    assert points.shape == (2, 136) and pose.shape == (2, 3) and logits.shape == (2, 68, 4, 4)
    (points.abs().mean() + pose.abs().mean() + logits.logsumexp(-1).mean() + head_l2(model)).backward()
    assert model.grid_head.out.weight.grad.abs().sum() > 0 and model.stem[0].weight.grad.abs().sum() > 0
    assert model.landmark_head is None
    model.eval()
    assert len(model(pixels)) == 2  # the exported graph's two outputs
    # an untrained grid head starts with flat scores and no offsets: every point near the centre
    assert model(pixels)[0].abs().max() < 0.01
    rebuilt = build_model(model.config)
    assert rebuilt.config == model.config == {"num_points": 68, "width": 1.0, "arch": "asmnet", "dropout": 0.3,
                                              "head": "grid"}
    assert set(rebuilt.state_dict()) == set(model.state_dict())
    with pytest.raises(ModelError, match="grid head needs arch 'asmnet'"):
        build_model({"arch": "mnv2", "head": "grid"})
    with pytest.raises(ModelError, match="unknown head"):
        build_model({"head": "heatmap"})


def test_config_lists_the_heads_the_model_builds() -> None:
    from asmnet.nn.model import HEADS as MODEL_HEADS

    assert HEADS == MODEL_HEADS  # one tuple: asmnet.architectures
    with pytest.raises(AsmnetError, match="--head 'grid': the grid head needs arch 'asmnet' \\(--arch\\)"):
        TrainConfig(data=["d"], out="o", head="grid", arch="mnv2")


def test_info_counts_the_grid_head(capsys) -> None:
    assert main(["info", "--head", "grid"]) == 0
    out = capsys.readouterr().out
    net = build_model({"head": "grid"})
    assert "asmnet, grid head" in out and f"{sum(p.numel() for p in net.parameters()):,}" in out
    assert main(["info", "--head", "grid", "--arch", "mnv2"]) == 2
    assert capsys.readouterr().err.strip() == "asmnet: error: --arch mnv2 --head grid: the grid head needs arch 'asmnet'"
    assert main(["info", "--model", "default", "--head", "grid"]) == 2
    assert "--head describe a configuration" in capsys.readouterr().err


def _config(data, out, **kw) -> TrainConfig:
    return tiny_train_config(data, out, **({"batch_size": 8, "lr": 2e-3, "head": "grid"} | kw))


@pytest.fixture(scope="module")
def grid_run(synthetic_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "run"
    train(_config(synthetic_set, out))
    return out


@pytest.mark.slow
def test_grid_training_logs_the_cell_term_and_checkpoints_validate(grid_run) -> None:
    history = [json.loads(line) for line in (grid_run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(h["train"]["cell"] > 0 for h in history)
    assert history[1]["train"]["cell"] < history[0]["train"]["cell"]
    ckpt = load_checkpoint(grid_run / "best.pt")
    assert ckpt["model_config"]["head"] == "grid"
    ckpt["state_dict"]["grid_head.out.weight"] = torch.zeros(3 * 68 - 3, 64, 1, 1)
    with pytest.raises(ModelError, match="landmark head does not output 204 values"):
        validate_checkpoint(ckpt, "x.pt")


@pytest.mark.slow
def test_pooled_checkpoint_initialises_a_grid_run(synthetic_set, tmp_path, capsys) -> None:
    pooled = tmp_path / "pooled"
    train(_config(synthetic_set, pooled, epochs=1, head="pooled"))
    grid = tmp_path / "grid"
    train(_config(synthetic_set, grid, epochs=1, init=str(pooled / "best.pt")))
    err = capsys.readouterr().err
    assert "(new: grid_head; not used: landmark_head)" in err
    a, b = load_checkpoint(pooled / "best.pt")["state_dict"], load_checkpoint(grid / "best.pt")
    assert b["model_config"]["head"] == "grid"
    assert b["shape_model"]["mean"] == load_checkpoint(pooled / "best.pt")["shape_model"]["mean"]
    shared = [k for k in a if k in b["state_dict"] and k.startswith("stem.0.weight")]
    assert shared  # the trunk carried over (and was trained on: it moved, but from there)
    assert torch.corrcoef(torch.stack([a[shared[0]].flatten(), b["state_dict"][shared[0]].flatten()]))[0, 1] > 0.9


@pytest.mark.slow
def test_grid_model_exports_quantizes_and_evaluates(grid_run, synthetic_set, tmp_path, capsys) -> None:
    import onnx

    pkg = tmp_path / "pkg"
    rc = main(["export", "--model", str(grid_run / "best.pt"), "--out", str(pkg), "--int8",
               "--calib-data", str(synthetic_set), "--calib-count", "16"])
    assert rc == 0, capsys.readouterr().err
    int8 = onnx.load(str(tmp_path / "pkg-int8" / "model.onnx")).graph
    producers = {o: n for n in int8.node for o in n.output}
    # the decode reads float scores and offsets: the head's last conv is not followed by a quantizer
    out_conv = [n for n in int8.node if n.name.startswith("/grid_head/out")]
    assert out_conv and all(n.op_type != "QuantizeLinear" for n in int8.node if n.input
                            and producers.get(n.input[0]) in out_conv)
    results = {}
    for name in ("pkg", "pkg-int8"):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--data", str(synthetic_set), "--model", str(tmp_path / name), "--json", str(out)]) == 0
        results[name] = json.loads(out.read_text())["nme_mean"]
    torch_json = tmp_path / "torch.json"
    assert main(["evaluate", "--data", str(synthetic_set), "--model", str(grid_run / "best.pt"),
                 "--json", str(torch_json)]) == 0
    assert json.loads(torch_json.read_text())["nme_mean"] == pytest.approx(results["pkg"], abs=1e-3)
    assert abs(results["pkg-int8"] - results["pkg"]) < 0.1 * results["pkg"]
