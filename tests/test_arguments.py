"""Every argument value that cannot work is refused before any work, in one line, with status 2
(issue 14.7): argparse's usage errors and the train settings that TrainConfig checks."""

from __future__ import annotations

import pytest

from asmnet.cli import main
from asmnet.errors import AsmnetError


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own exit
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


TRAIN_BAD = [
    ("--input-size", "0"), ("--input-size", "7"), ("--input-size", "2000"), ("--lr", "nan"), ("--lr", "0"),
    ("--lr", "inf"), ("--variance", "2"), ("--variance", "0"), ("--workers", "-1"), ("--group-pattern", "("),
    ("--device", "cuda"), ("--device", "gpu0"), ("--epochs", "0"), ("--batch-size", "0"), ("--batch-size", "1"),
    ("--warmup-epochs", "-1"), ("--width", "0"), ("--width", "nan"), ("--dropout", "1"), ("--ema", "1"),
    ("--val-fraction", "1"), ("--val-fraction", "-0.1"), ("--crop-scale", "0"), ("--label-origin", "nan"),
    ("--weight-decay", "-1"), ("--pose-weight", "nan"), ("--head-l2", "-1"), ("--bn-momentum", "2"),
    ("--seed", "-1"), ("--split-seed", "-5"), ("--stop-after", "0"), ("--nproc", "0"), ("--dist-timeout", "nan"),
    ("--oversample", "x=0"), ("--oversample", "x"), ("--points", "5"), ("--input-size", "abc"),
    ("--augment", "scale"), ("--augment", "scale=abc"), ("--augment", "sharpness=0.1"), ("--augment", "blur_prob=2"),
    ("--augment", "rotation=-5"), ("--augment", "scale=1"), ("--augment", "shift=nan"), ("--teacher-weight", "-1"),
    ("--augment", "wide_prob=1.5"), ("--augment", "wide_shift=1"), ("--augment", "wide_scale=-0.1"),
]


@pytest.mark.parametrize(("flag", "value"), TRAIN_BAD)
def test_bad_train_settings_are_one_line_and_exit_2(flag, value, tmp_path, capsys) -> None:
    if value == "cuda":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: --device cuda is valid here")
    rc, err = run(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"), f"{flag}={value}"], capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("asmnet: error: ") and flag in err[0], err
    assert not (tmp_path / "run").exists()  # refused before anything was made


OTHER_BAD = [
    ["evaluate", "--data", "x", "--batch-size", "0"], ["evaluate", "--data", "x", "--threads", "0"],
    ["evaluate", "--data", "x", "--asm-blend", "2"], ["info", "--input-size", "0"], ["info", "--width", "-1"],
    ["predict", "x", "--threads", "0"], ["predict", "x", "--workers", "-1"], ["predict", "--webcam", "-1"],
    ["predict", "x", "--redetect-every", "0"], ["predict", "x", "--max-frames", "0"],
    ["predict", "x", "--min-score", "nan"], ["demo", "--min-score", "inf"], ["benchmark", "--seconds", "0"],
    ["benchmark", "--backends", "tensorflow"], ["export", "--model", "a", "--out", "b", "--calib-count", "0"],
    ["nonsense"],
]


@pytest.mark.parametrize("argv", OTHER_BAD, ids=lambda a: " ".join(a))
def test_bad_values_of_other_commands_are_one_line_and_exit_2(argv, capsys) -> None:
    rc, err = run(argv, capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("asmnet: error: "), err


def test_train_config_checks_its_settings_in_python_too(tmp_path) -> None:
    from asmnet.training.config import TrainConfig

    TrainConfig(data=["d"], out="o")  # the defaults are valid
    with pytest.raises(AsmnetError, match="--input-size 7"):
        TrainConfig(data=["d"], out="o", input_size=7)
    with pytest.raises(AsmnetError, match="--augment"):
        TrainConfig(data=["d"], out="o", augment={"spin": 1})
    with pytest.raises(AsmnetError, match="--data"):
        TrainConfig(data=[], out="o")
