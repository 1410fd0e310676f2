"""The ``asmnet`` command line: info, train, evaluate, predict, export, benchmark.

Exit status: 0 when everything worked, 1 when some inputs failed (they are listed), 2 when nothing
could be done (bad arguments, unreadable model, no usable input), 130 on Ctrl-C. Known problems
print one line ``asmnet: error: <file>: <problem>``, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import AsmnetError

EXIT_OK, EXIT_SOME_FAILED, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130


def _fail(msg: str) -> int:
    print(f"asmnet: error: {msg}", file=sys.stderr)
    return EXIT_FATAL


# -- info --------------------------------------------------------------------------------------
def add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters and multiply-adds of a network configuration")
    p.add_argument("--points", type=int, default=68, choices=(68, 98))
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--arch", default="asmnet", choices=("asmnet", "mnv2"))
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from .nn import build_model, count_macs, count_parameters

    model = build_model({"num_points": args.points, "width": args.width, "arch": args.arch})
    params, macs = count_parameters(model), count_macs(model, args.input_size)
    print(f"arch {args.arch}, width {args.width}, {args.points} points, input {args.input_size}x{args.input_size}")
    print(f"parameters: {params:,} ({params / 1e6:.2f} M)")
    print(f"multiply-adds: {macs:,} ({macs / 1e6:.1f} M MACs, {2 * macs / 1e9:.2f} GFLOPs)")
    return EXIT_OK


# -- train -------------------------------------------------------------------------------------
def add_train(sub: argparse._SubParsersAction) -> None:
    from .geometry import CROP_SCALE

    p = sub.add_parser("train", help="train a model on annotated faces",
                       description="Train ASMNet. Every epoch writes last.pt/best.pt atomically; "
                       "--resume continues exactly where a run stopped.")
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="a 300W-layout folder (.pts beside images), a WFLW list or a .mat folder; repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, metrics, card)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--points", type=int, default=68, choices=(68, 98))
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--arch", default="asmnet", choices=("asmnet", "mnv2"))
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--init", default=None, metavar="PT", help="start from these weights and their shape model")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights (e.g. 0.999); 0 = off")
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--loss", default="asm", choices=("asm", "mse"),
                   help="asm: ASM-LOSS; mse: the same without the ASM term (baseline)")
    p.add_argument("--point-loss", default="mse", choices=("mse", "l1"), help="distance of landmark terms")
    p.add_argument("--variance", type=float, default=0.97, help="share of shape variance the ASM keeps")
    p.add_argument("--pose-weight", type=float, default=1.0)
    p.add_argument("--bn-momentum", type=float, default=0.01, help="BatchNorm running-stat momentum")
    p.add_argument("--head-l2", type=float, default=0.0, help="L2 on the heads (the reference used 0.01)")
    p.add_argument("--crop-scale", type=float, default=CROP_SCALE,
                   help="crop side / landmark-box side (default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.12)
    p.add_argument("--group-pattern", default=None, metavar="REGEX",
                   help="regex on the stem whose first group names a group kept on one side of the split "
                   r"(video clips: '^(?:testcsv_)?([A-Za-z][A-Za-z_.'-]*_\d)\d$' for Udacity frames)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from .training.trainer import TrainConfig, train

    cfg = TrainConfig(
        data=args.data, out=args.out, points=args.points, input_size=args.input_size, width=args.width,
        arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, init=args.init, ema=args.ema,
        warmup_epochs=args.warmup_epochs, loss=args.loss, point_loss=args.point_loss, variance=args.variance,
        pose_weight=args.pose_weight, bn_momentum=args.bn_momentum, head_l2=args.head_l2, crop_scale=args.crop_scale,
        val_fraction=args.val_fraction, group_pattern=args.group_pattern, split_seed=args.split_seed,
        seed=args.seed, workers=args.workers, device=args.device,
    )
    train(cfg, resume=args.resume)
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asmnet", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"asmnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


COMMANDS = [add_info, add_train]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AsmnetError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("asmnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
