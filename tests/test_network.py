"""ASMNet network: size and cost against the design brief, taps, shapes, config round trip."""

from __future__ import annotations

import pytest
import torch

from asmnet.errors import ModelError
from asmnet.nn import ASMNet, build_model, count_macs, count_parameters, head_l2

BRIEF_PARAMS = 1_412_435  # a re-implementation's count (paper: 1.43 M)
BRIEF_MACS_224 = 256.5e6
BRIEF_MNV2_PARAMS = 2.42e6


@pytest.fixture(scope="module")
def asmnet68() -> ASMNet:
    torch.manual_seed(0)
    return ASMNet(num_points=68).eval()


def _pixels(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=gen) * 255.0


def test_parameter_count_matches_brief(asmnet68: ASMNet) -> None:
    n = count_parameters(asmnet68)
    assert abs(n - 1.43e6) / 1.43e6 < 0.05, f"ASMNet-68 has {n:,} parameters"
    assert n == BRIEF_PARAMS, f"ASMNet-68 has {n:,} parameters, the brief says {BRIEF_PARAMS:,}"
    assert asmnet68.num_features == 536


def test_macs_match_brief_and_scale_with_area(asmnet68: ASMNet) -> None:
    macs_224 = count_macs(asmnet68, 224)
    assert abs(macs_224 - BRIEF_MACS_224) / BRIEF_MACS_224 < 0.05, f"{macs_224:,} MACs at 224"
    macs_128 = count_macs(asmnet68, (128, 128))
    ratio = macs_128 / macs_224
    assert ratio == pytest.approx((128 / 224) ** 2, rel=0.05), f"{macs_128:,} MACs at 128"


def test_count_macs_restores_training_mode() -> None:
    model = ASMNet().train()
    count_macs(model, 32)
    assert model.training


def test_mnv2_baseline_size() -> None:
    model = ASMNet(num_points=68, arch="mnv2")
    n = count_parameters(model)
    assert abs(n - BRIEF_MNV2_PARAMS) / BRIEF_MNV2_PARAMS < 0.05, f"mnv2-68 has {n:,} parameters"
    assert model.num_features == 1280
    landmarks, pose = model.eval()(_pixels(64, batch=1))
    assert landmarks.shape == (1, 136) and pose.shape == (1, 3)


@pytest.mark.parametrize("num_points", [68, 98])
@pytest.mark.parametrize("size", [128, 224])
def test_output_shapes(num_points: int, size: int) -> None:
    model = ASMNet(num_points=num_points).eval()
    with torch.no_grad():
        landmarks, pose = model(_pixels(size, batch=1 if size == 224 else 2))
    batch = 1 if size == 224 else 2
    assert landmarks.shape == (batch, 2 * num_points)
    assert pose.shape == (batch, 3)
    assert landmarks.dtype == torch.float32 and torch.isfinite(landmarks).all()


@pytest.mark.parametrize("size", [32, 100])
def test_sizes_not_divisible_by_32(asmnet68: ASMNet, size: int) -> None:
    with torch.no_grad():
        landmarks, pose = asmnet68(_pixels(size, batch=1))
    assert landmarks.shape == (1, 136) and pose.shape == (1, 3)


def test_98_points_changes_only_the_landmark_head(asmnet68: ASMNet) -> None:
    a = asmnet68.state_dict()
    b = ASMNet(num_points=98).state_dict()
    assert a.keys() == b.keys()
    differ = {k for k in a if a[k].shape != b[k].shape}
    assert differ == {"landmark_head.weight", "landmark_head.bias"}
    assert b["landmark_head.weight"].shape == (196, 536)


def test_six_taps_channels_and_grids(asmnet68: ASMNet) -> None:
    assert asmnet68.tap_channels == (24, 32, 64, 96, 160, 160)
    with torch.no_grad():
        taps = asmnet68.features(_pixels(224, batch=1))
    assert [t.shape[1] for t in taps] == [24, 32, 64, 96, 160, 160]
    assert [t.shape[2] for t in taps] == [56, 28, 14, 14, 7, 7]
    assert [t.shape[3] for t in taps] == [56, 28, 14, 14, 7, 7]


def test_block_15_is_the_last_block(asmnet68: ASMNet) -> None:
    # 16 inverted-residual blocks: expanded_conv and block_1 ... block_15; block_15 adds a residual
    assert len(asmnet68.blocks) == 16
    assert asmnet68.blocks[15].use_residual
    assert not asmnet68.blocks[13].use_residual


def test_eval_is_deterministic_and_train_uses_dropout(asmnet68: ASMNet) -> None:
    x = _pixels(64)
    with torch.no_grad():
        first = asmnet68(x)
        second = asmnet68(x)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    model = ASMNet(dropout=0.5)
    model.set_landmark_bias(torch.zeros(136), weight_std=1.0)
    model.train()
    torch.manual_seed(1)
    a = model(x)[0]
    b = model(x)[0]
    assert not torch.allclose(a, b)


def test_normalises_raw_pixels(asmnet68: ASMNet) -> None:
    mean_image = (torch.tensor([0.485, 0.456, 0.406]) * 255.0).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert asmnet68.normalize(mean_image).abs().max() < 1e-5
    assert "mean" not in asmnet68.state_dict()  # constants, not weights


def test_width_half_builds_and_runs() -> None:
    model = ASMNet(width=0.5).eval()
    assert all(c % 8 == 0 for c in model.tap_channels)
    assert count_parameters(model) < count_parameters(ASMNet())
    with torch.no_grad():
        landmarks, pose = model(_pixels(64, batch=1))
    assert landmarks.shape == (1, 136) and pose.shape == (1, 3)


def test_config_round_trip(asmnet68: ASMNet) -> None:
    config = asmnet68.config
    assert config == {"num_points": 68, "width": 1.0, "arch": "asmnet", "dropout": 0.3, "head": "pooled"}
    rebuilt = build_model(config).eval()
    rebuilt.load_state_dict(asmnet68.state_dict())
    x = _pixels(64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x)[0], asmnet68(x)[0])
    assert build_model({"arch": "mnv2", "num_points": 98}).config["arch"] == "mnv2"


@pytest.mark.parametrize("config", [{"arch": "resnet"}, {"num_points": 0}, {"depth": 3}, {"width": -1}])
def test_bad_config_raises_model_error(config: dict) -> None:
    with pytest.raises(ModelError):
        build_model(config)


def test_head_l2_sums_both_heads(asmnet68: ASMNet) -> None:
    expected = sum(
        p.pow(2).sum()
        for head in (asmnet68.landmark_head, asmnet68.pose_head)
        for p in (head.weight, head.bias)
    )
    assert torch.allclose(head_l2(asmnet68), expected)


def test_set_landmark_bias_starts_at_mean_shape() -> None:
    model = ASMNet(num_points=68).eval()
    mean_shape = torch.linspace(-0.5, 0.5, 136)
    model.set_landmark_bias(mean_shape)
    with torch.no_grad():
        landmarks, _ = model(_pixels(64))
    assert torch.allclose(landmarks, mean_shape.expand(2, -1), atol=0.05)
    with pytest.raises(ValueError):
        model.set_landmark_bias(torch.zeros(10))


def test_gradients_reach_heads_and_stem() -> None:
    model = ASMNet(num_points=68).train()
    landmarks, pose = model(_pixels(64))
    (landmarks.pow(2).mean() + pose.pow(2).mean() + 0.01 * head_l2(model)).backward()
    assert model.landmark_head.weight.grad is not None and model.pose_head.weight.grad is not None
    assert model.stem[0].weight.grad is not None and model.stem[0].weight.grad.abs().sum() > 0
