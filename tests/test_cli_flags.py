"""The command line's flags: train flags built from TrainConfig (defaults = the shipped model's
recipe), one set of model flags, help text for every option."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from asmnet.cli import _key_counts, _train_argv, build_parser, config_from_args, main
from asmnet.errors import AsmnetError
from asmnet.runtime import DEFAULT_MODEL_DIR
from asmnet.training.config import TrainConfig


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_train_setting_has_a_flag_and_no_default_is_repeated():
    parser = build_parser()
    train = subparsers(parser)["train"]
    dests = {a.dest for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in dests, f.name
    args = parser.parse_args(["train", "--data", "a", "--out", "o"])
    assert config_from_args(TrainConfig, args) == TrainConfig(data=["a"], out="o")


def test_train_flags_reach_the_config():
    args = build_parser().parse_args([
        "train", "--data", "a", "--data", "b", "--out", "o", "--point-loss", "mse", "--variance", "0.95",
        "--init", "w.pt", "--no-sync-bn", "--oversample", "a=3", "--group-pattern=-(\\d)", "--shape-passes", "2"])
    cfg = config_from_args(TrainConfig, args)
    assert cfg.data == ["a", "b"] and cfg.point_loss == "mse" and cfg.variance == 0.95 and cfg.init == "w.pt"
    assert cfg.sync_bn is False and cfg.oversample == {"a": 3} and cfg.group_pattern == "-(\\d)"
    assert cfg.shape_passes == 2 and isinstance(cfg.variance, float)


def test_augment_flags_merge_onto_the_defaults():
    from asmnet.training.augment import AugmentConfig

    args = build_parser().parse_args(["train", "--data", "a", "--out", "o", "--augment", "scale=0.06",
                                      "--augment", "shift=0.04", "--augment", "rotation=8"])
    cfg = config_from_args(TrainConfig, args)
    assert cfg.augment == AugmentConfig(scale=0.06, shift=0.04, rotation=8.0).to_dict()
    # the command torchrun's processes get (--nproc) says the same
    again = build_parser().parse_args(["train", *_train_argv(args)])
    assert config_from_args(TrainConfig, again).augment == cfg.augment


def test_malformed_key_counts_are_one_line_errors():
    assert _key_counts("oversample", ["x=2", "a=b=1"]) == {"x": 2, "a=b": 1}
    for bad in ("x", "=2", "x=0", "x=-1", "x=1.5"):
        with pytest.raises(AsmnetError, match="expected FOLDER=N"):
            _key_counts("oversample", [bad])


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")
def test_train_defaults_are_the_recipe_of_the_shipped_model():
    """The from-scratch stage that made the shipped model (its card's first stage) used the
    defaults; only the data, run folder and machine-dependent settings differ."""
    card = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())["card"]
    stage1 = card["training"]["earlier_stages"][0]["config"]
    assert "init" not in stage1 or stage1["init"] is None  # the from-scratch stage
    defaults = dataclasses.asdict(TrainConfig(data=["d"], out="o"))  # (data and out must be given)
    machine = {"data", "out", "group_pattern", "workers", "device"}  # data- and machine-specific
    # augmentation keys added since (wide_prob 0: no wide draws) read as their defaults, as in training
    stage1 = {**stage1, "augment": {**defaults["augment"], **stage1["augment"]}}
    differing = {k: (v, defaults[k]) for k, v in stage1.items() if k not in machine and defaults[k] != v}
    assert differing == {}
    info = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    assert build_parser().parse_args(["info"]).input_size == info["input_size"] == TrainConfig.input_size


def test_model_flags_are_the_same_in_every_command():
    commands = subparsers(build_parser())
    expected = {"demo": ("--model", "--backend", "--threads", "--detector"),
                "predict": ("--model", "--backend", "--threads", "--detector"),
                "evaluate": ("--model", "--backend", "--threads", "--detector"),
                "benchmark": ("--model", "--detector")}
    for name, flags in expected.items():
        actions = {a.option_strings[0]: a for a in commands[name]._actions if a.option_strings}
        for flag in flags:
            assert flag in actions, (name, flag)
        assert actions["--model"].default is None
        if "--backend" in flags:
            assert actions["--backend"].choices == ("auto", "onnx", "torch")
    evaluate = {a.dest: a.default for a in commands["evaluate"]._actions}
    assert evaluate["detector"] is None  # evaluate's default protocol: the ground-truth box


def test_every_option_has_help_and_the_top_level_help_is_plain(capsys):
    parser = build_parser()
    for name, sub in subparsers(parser).items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and action.help.strip(), f"asmnet {name} {action.option_strings[0]}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "demo" in text and "predict" in text
    for name in subparsers(parser):
        sub = subparsers(parser)[name]
        assert "``" not in sub.format_help(), name


def test_nproc_relaunch_keeps_every_train_setting():
    """--nproc re-runs the same command under torchrun: the arguments rebuilt from the parsed ones
    give the same TrainConfig (switches, repeatable and negative-looking values included)."""
    from asmnet.cli import _train_argv

    parser = build_parser()
    args = parser.parse_args(["train", "--data", "a", "--data", "b c", "--out", "o", "--nproc", "2", "--no-sync-bn",
                              "--oversample", "a=2", "--oversample", "b c=3", "--label-origin", "-0.5",
                              "--init", "default", "--stop-after", "3"])
    again = parser.parse_args(["train", *_train_argv(args)])
    assert again.nproc is None and again.stop_after == 3
    assert config_from_args(TrainConfig, again) == config_from_args(TrainConfig, args)
    assert config_from_args(TrainConfig, again).oversample == {"a": 2, "b c": 3}
