"""The ``asmnet`` command line: demo, predict, evaluate, train, export, benchmark, info, models.

Exit status: 0 when everything worked, 1 when some inputs failed (they are listed), 2 when nothing
could be done (bad arguments, unreadable model, no usable input), 130 on Ctrl-C. Known problems
print one line ``asmnet: error: <file>: <problem>``, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import typing
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import numpy as np

from . import __version__
from .architectures import arch_head_problem
from .errors import AsmnetError, AsmnetWarning, DataNote, first_line

if typing.TYPE_CHECKING:
    from .evaluation import EvaluationResult
    from .jobs.ray_engine import RayOptions

EXIT_OK, EXIT_SOME_FAILED, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130
MODEL_HELP = "a shipped model's name (asmnet models lists them; default: default), a model folder, .onnx or .pt"


def _fail(msg: str) -> int:
    print(f"asmnet: error: {msg}", file=sys.stderr)
    return EXIT_FATAL


def _batch_status(failures: list[str], any_done: bool) -> int:
    """Exit status of a batch command: 0 when nothing failed; else the failed inputs are listed
    again (they were reported as they happened) and the status is 1, or 2 when nothing was done."""
    if not failures:
        return EXIT_OK
    print("asmnet: failed inputs:\n" + "\n".join(f"  {f}" for f in failures), file=sys.stderr)
    return EXIT_SOME_FAILED if any_done else EXIT_FATAL


def whole(low: int, high: int):
    """argparse type: a whole number in low..high (a bad value is a one-line usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    parse.__name__ = "whole number"
    return parse


def number(low: float = -np.inf, high: float = np.inf, low_open: bool = False):
    """argparse type: a finite number in [low, high] ((low, high] with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not np.isfinite(value) or value < low or value > high or (low_open and value == low):
            span = f" in {'(' if low_open else '['}{low:g}, {high:g}]" if np.isfinite([low, high]).any() else ""
            raise argparse.ArgumentTypeError(f"{text} is not a finite number{span}")
        return value

    parse.__name__ = "number"
    return parse


# -- shared flags ------------------------------------------------------------------------------
def add_model_flags(p: argparse.ArgumentParser, *, backend: bool = True, threads: bool = True,
                    detector: str | None = "auto", detector_help: str | None = None,
                    threads_help: str = "inference threads per process (default: ONNX Runtime's choice)") -> None:
    """``--model`` and, as asked, ``--backend``, ``--threads`` and ``--detector`` (default
    ``detector``), with the same meaning and help in every command that runs a model."""
    from .runtime import BACKENDS

    p.add_argument("--model", default=None, metavar="MODEL", help=MODEL_HELP)
    if backend:
        p.add_argument("--backend", default="auto", choices=BACKENDS,
                       help="auto: ONNX Runtime, or PyTorch for a checkpoint (default: %(default)s)")
    if threads:
        p.add_argument("--threads", type=whole(1, 1024), default=None, metavar="N", help=threads_help)
    from .detection import DETECTORS

    names = ", ".join(("auto", *DETECTORS))  # the registered detectors, so a new one is listed at once
    p.add_argument("--detector", default=detector, metavar="NAME",
                   help=(detector_help or "face detector (default: %(default)s)") + f"; one of {names}")
    add_detector_option_flags(p)


def add_detector_option_flags(p: argparse.ArgumentParser) -> None:
    """The detector options of the Python API (``make_detector`` keywords) as flags; unset ones are
    left to the detector's default (see :func:`detector_options`)."""
    p.add_argument("--detector-model", default=None, metavar="FILE",
                   help="the detector's model file: a YuNet .onnx for yunet (with --detector auto, it means yunet), "
                   "mmod_human_face_detector.dat for dlib-cnn")
    p.add_argument("--min-face", type=number(8, 10000), default=None, metavar="PX",
                   help="mtcnn: the face size its pyramid starts from, in pixels (default 48, which still finds "
                   "~40 px faces; cost grows with pixels / PX^2)")
    p.add_argument("--upsample", type=whole(0, 4), default=None, metavar="N",
                   help="dlib-hog / dlib-cnn: double the image N times first (dlib-hog default 1: faces from ~40 px)")
    p.add_argument("--recall", action="store_true",
                   help="the detector's 'recall' preset: more tilted faces (mtcnn: the image also searched turned by "
                   "+-30 degrees; dlib-hog: threshold -0.4), at 2-4x the detector's time; other detector flags win "
                   "over it")


def detector_options(args: argparse.Namespace) -> dict:
    """The detector keywords given on the command line (``--detector-model``, ``--min-face``, ``--upsample``,
    ``--recall`` as ``preset="recall"``)."""
    given = {"model_path": getattr(args, "detector_model", None), "min_face": getattr(args, "min_face", None),
             "upsample": getattr(args, "upsample", None), "preset": "recall" if getattr(args, "recall", False) else None}
    return {k: v for k, v in given.items() if v is not None}


# -- info --------------------------------------------------------------------------------------
def _missing(module: str) -> bool:
    """Whether ``module`` cannot be imported here (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a finder that refuses it, or a half-imported module
        return True


TORCH_EXTRA = "PyTorch is not installed: pip install 'asmnet[train]' (in a clone: pip install '.[train]')"


#: the train flags that describe a network for ``asmnet info``
INFO_CONFIG = ("points", "input_size", "width", "arch", "head")


def add_info(sub: argparse._SubParsersAction) -> None:
    from .training.config import TrainConfig

    p = sub.add_parser("info", help="parameters and multiply-adds of a model or a network configuration",
                       description="Parameters and multiply-adds of a model (--model: counted on its ONNX graph, "
                       "no PyTorch needed) or of a network configuration (the flags; defaults: the shipped "
                       "model's and asmnet train's).")
    p.add_argument("--model", default=None, metavar="MODEL", help=MODEL_HELP)
    # the defaults and help of the train flags: one source for both commands
    defaults = {f.name: f for f in dataclasses.fields(TrainConfig)}
    types = {"input_size": whole(32, 1024), "width": number(0, 4, low_open=True)}  # a checkpoint's range
    for name in INFO_CONFIG:
        f = defaults[name]
        p.add_argument(f"--{name.replace('_', '-')}", type=types.get(name, type(f.default)), default=f.default,
                       choices=f.metadata.get("choices"), help=f.metadata["help"] + " (default: %(default)s)")
    p.set_defaults(func=cmd_info, _info_defaults={k: f.default for k, f in defaults.items()})


def _print_counts(params: int, macs: int, what: str) -> None:
    print(f"parameters: {params:,} ({params / 1e6:.2f} M){what}")
    print(f"multiply-adds: {macs:,} ({macs / 1e6:.1f} M MACs, {2 * macs / 1e9:.2f} GFLOPs)")


def cmd_info(args: argparse.Namespace) -> int:
    from .runtime import DEFAULT_MODEL, resolve_model

    cfg = {k: getattr(args, k) for k in INFO_CONFIG}
    model = args.model
    if model is not None and any(v != args._info_defaults[k] for k, v in cfg.items()):
        return _fail("--points, --input-size, --width, --arch and --head describe a configuration; "
                     "--model counts that model as it is")
    # a configuration is counted on the network itself (PyTorch) unless a model was named, or it
    # is the shipped model's own configuration and PyTorch is absent (its ONNX graph then counts)
    if model is None and _missing("torch"):
        shipped = {"points": 68, "width": 1.0, "arch": "asmnet", "head": "pooled"}
        if any(cfg[k] != v for k, v in shipped.items()):
            return _fail(f"counting a network configuration needs PyTorch; {TORCH_EXTRA} (or pass --model)")
        model = DEFAULT_MODEL
    if model is None:
        from .nn import build_model, count_macs, count_parameters

        if arch_head_problem(cfg["arch"], cfg["head"]):
            return _fail(f"--arch {cfg['arch']} --head {cfg['head']}: {arch_head_problem(cfg['arch'], cfg['head'])}")
        net = build_model({"num_points": cfg["points"], "width": cfg["width"], "arch": cfg["arch"], "head": cfg["head"]})
        print(f"arch {cfg['arch']}, {cfg['head']} head, width {cfg['width']}, {cfg['points']} points, "
              f"input {cfg['input_size']}x{cfg['input_size']}")
        _print_counts(count_parameters(net), count_macs(net, cfg["input_size"]), "")
        return EXIT_OK
    from .onnx_graph import count_onnx
    from .runtime import load_model

    path = resolve_model(model)
    onnx_file = path / "model.onnx" if path.is_dir() else path
    if onnx_file.suffix != ".onnx" or not onnx_file.exists():
        if _missing("torch"):
            return _fail(f"{path}: counting a checkpoint needs PyTorch; {TORCH_EXTRA} (or export it to ONNX)")
        from .nn import count_macs, count_parameters

        loaded = load_model(path, backend="torch")
        size = loaded.info.input_size
        print(f"model {loaded.info.name} ({path}), {loaded.info.markup.n_points} points, input {size}x{size}")
        _print_counts(count_parameters(loaded.model), count_macs(loaded.model, size), " (PyTorch)")
        return EXIT_OK
    info = load_model(path, backend="onnx").info
    size = info.input_size
    params, macs = count_onnx(onnx_file, size)
    print(f"model {info.name} ({path}), {info.markup.n_points} points, input {size}x{size}, "
          f"{info.card.get('precision', 'float32').split(' ')[0]}")
    _print_counts(params, macs, " in the ONNX graph (BatchNorm folded into the convolutions)")
    return EXIT_OK


# -- train -------------------------------------------------------------------------------------
def add_train(sub: argparse._SubParsersAction) -> None:
    from .training.config import TrainConfig

    p = sub.add_parser("train", help="train a model on annotated faces",
                       description="Train ASMNet. The defaults are the from-scratch recipe of the shipped "
                       "model; --init fine-tunes from a checkpoint or model folder instead (the shipped model "
                       "fine-tunes well: see --init). Every epoch writes "
                       "last.pt/best.pt atomically; --resume continues exactly where a run stopped. Data-parallel: "
                       "--nproc N, or torchrun --nproc-per-node N -m asmnet train ... (docs/distributed.md).")
    add_config_flags(p, TrainConfig)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run OUT holds (its last.pt, best.pt, ...); without it, or --resume, such an OUT "
                   "is refused")
    p.add_argument("--stop-after", type=whole(1, 1_000_000), default=None, metavar="EPOCH",
                   help="stop after this epoch of the plan (continue later with --resume)")
    p.add_argument("--nproc", type=whole(1, 1024), default=None, metavar="N",
                   help="train with N processes on this machine: launches torchrun --standalone "
                   "--nproc-per-node N -m asmnet train with the other arguments")
    p.add_argument("--dist-timeout", type=number(0, 1e6, low_open=True), default=15.0, metavar="MIN",
                   help="DDP: a rank that waits this many minutes for the others fails the job")
    p.set_defaults(func=cmd_train, _train_parser=p)


def add_refiner(sub: argparse._SubParsersAction) -> None:
    from .training.refiner_config import RefinerConfig

    p = sub.add_parser("refiner", help="train a refiner for a landmark model (the --refine-regions stage)",
                       description="Train the refiner of a landmark model: one small network per face part "
                       "(eyes, brows, nose, mouth, jaw), each on patches cut at the image's own resolution around "
                       "the model's predictions, then a shape regression of every point (--kinds none: the "
                       "regression alone; --after DIR: a stage after an earlier refiner). Writes OUT/refiner/ "
                       "(refiner.json, one ONNX graph per part, shape_regression.npz; copy it into the model "
                       "package) and OUT/refiner_validation.json. Every epoch is checkpointed; --resume continues.")
    add_config_flags(p, RefinerConfig)
    p.add_argument("--resume", action="store_true", help="continue the run OUT holds")
    p.set_defaults(func=cmd_refiner)


def cmd_refiner(args: argparse.Namespace) -> int:
    from .training.refiner_config import RefinerConfig

    cfg = config_from_args(RefinerConfig, args)  # a bad setting fails in one line before PyTorch loads
    if _missing("torch"):
        return _fail(f"training needs PyTorch; {TORCH_EXTRA}")
    from .training.refiner import train_refiner

    train_refiner(cfg, resume=args.resume, log=lambda line: print(line, flush=True))
    return EXIT_OK


def add_config_flags(p: argparse.ArgumentParser, config_cls: type) -> None:
    """One flag per field of a config dataclass, from its type, default and ``metadata["help"]``.

    ``batch_size: int = 64`` gives ``--batch-size N`` (default 64); ``str | None`` gives a string
    flag; ``list[str]``, ``dict[str, int]`` and ``dict[str, float]`` give repeatable flags
    (``--data DIR``, ``--oversample FOLDER=N``, ``--augment KEY=X``, merged onto its defaults); a
    ``bool`` defaulting to True gives ``--no-NAME``. A field without a default is a required flag;
    ``metadata["flag"] = False`` leaves a field out.
    """
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        meta = dict(f.metadata)
        if not meta.pop("flag", True):
            continue
        text = meta.pop("help").replace("%", "%%")
        name, kind = f.name.replace("_", "-"), hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        origin = typing.get_origin(kind)
        if kind is bool:
            if f.default:
                p.add_argument(f"--no-{name}", dest=f.name, action="store_false", help=text)
            else:
                p.add_argument(f"--{name}", dest=f.name, action="store_true", help=text)
        elif origin in (list, dict):  # repeatable; dict items are KEY=N, checked by config_from_args
            p.add_argument(f"--{name}", dest=f.name, action="append", required=required, default=None,
                           help=text, **meta)
        else:
            scalar = next(t for t in typing.get_args(kind) if t is not type(None)) if origin else kind
            if not required and f.default is not None:
                text += " (default: %(default)s)"
            meta.setdefault("metavar", {int: "N", float: "X"}.get(scalar, "TEXT"))
            p.add_argument(f"--{name}", dest=f.name, type=scalar, required=required,
                           default=None if required else f.default, help=text, **meta)


def config_from_args(config_cls: type, args: argparse.Namespace) -> Any:
    """The config dataclass of parsed :func:`add_config_flags` flags; a malformed ``KEY=N`` item
    raises :class:`AsmnetError` (one line, exit 2)."""
    hints = typing.get_type_hints(config_cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        if not f.metadata.get("flag", True) or getattr(args, f.name, None) is None:
            continue  # not a flag, or a repeatable flag not given: the field's default
        value = getattr(args, f.name)
        if typing.get_origin(hints[f.name]) is dict and typing.get_args(hints[f.name])[1] is float:
            value = f.default_factory() | _key_values(f.name.replace("_", "-"), value)  # onto the defaults
        elif typing.get_origin(hints[f.name]) is dict:
            value = _key_counts(f.name.replace("_", "-"), value)
        values[f.name] = value
    return config_cls(**values)


def _key_counts(flag: str, items: list[str]) -> dict[str, int]:
    """``["lfpw_train=3"]`` -> ``{"lfpw_train": 3}``; a malformed item is a usage error."""
    out: dict[str, int] = {}
    for item in items:
        key, _, times = item.rpartition("=")
        if not key or not times.isdigit() or int(times) < 1:
            raise AsmnetError(f"--{flag} {item!r}: expected FOLDER=N with a whole number N >= 1")
        out[key] = int(times)
    return out


def _key_values(flag: str, items: list[str]) -> dict[str, float]:
    """``["scale=0.06"]`` -> ``{"scale": 0.06}``; a malformed item is a usage error."""
    out: dict[str, float] = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = None
        if not key or value is None:
            raise AsmnetError(f"--{flag} {item!r}: expected KEY=X with a number X")
        out[key] = value
    return out


def _train_argv(args: argparse.Namespace) -> list[str]:
    """The train command's arguments as parsed, minus --nproc (for the processes torchrun starts)."""
    argv: list[str] = []
    for action in args._train_parser._actions:
        if not action.option_strings or action.dest in ("help", "nproc"):
            continue
        flag, value = max(action.option_strings, key=len), getattr(args, action.dest)
        if action.nargs == 0:  # a switch (store_true or store_false): given when it moved off its default
            argv += [flag] if value != action.default else []
        elif isinstance(value, list):
            argv += [f"{flag}={v}" for v in value]
        elif value is not None:
            argv.append(f"{flag}={value}")  # "=": values that start with "-" stay values
    return argv


def _launch_torchrun(args: argparse.Namespace) -> int:
    """``asmnet train --nproc N ...``: run torchrun on this machine with the same arguments."""
    import shlex
    import subprocess

    from .training import distributed

    if distributed.under_launcher():
        return _fail("--nproc starts torchrun itself: leave it out when launching with torchrun")
    if not args.resume:  # fail here, not in N processes (a resumed run has its saved batch)
        distributed.per_rank_batch(args.batch_size, args.nproc)
    cmd = distributed.torchrun_command(args.nproc, _train_argv(args))
    print(f"asmnet: launching {args.nproc} processes: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, env=distributed.launch_env(args.nproc))
    try:
        rc = proc.wait()
    except KeyboardInterrupt:  # torchrun got the Ctrl-C too and stops its workers
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if rc != 0:
        return _fail(f"torchrun exited with status {rc}: see the failing rank's message above")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from .training.config import TrainConfig

    # the config first: a bad setting fails in one line before PyTorch is imported
    cfg = config_from_args(TrainConfig, args)  # TrainConfig.validate() checks every setting
    if _missing("torch"):
        return _fail(f"training needs PyTorch; {TORCH_EXTRA}")
    if cfg.device != "auto":
        from .training.trainer import pick_device

        pick_device(cfg.device)  # "cuda" on a machine without one: one line now, not in N ranks
    from .training.trainer import check_run_folder, train

    check_run_folder(cfg.out, args.resume, args.overwrite)  # once here, not in every rank
    if args.nproc is not None and args.nproc > 1:
        return _launch_torchrun(args)
    from .training import distributed

    ctx = distributed.env_context()
    if not ctx.enabled:
        return _train_status(train(cfg, resume=args.resume, stop_after=args.stop_after, overwrite=args.overwrite))
    try:
        result = train(cfg, resume=args.resume, stop_after=args.stop_after, timeout_min=args.dist_timeout,
                       overwrite=args.overwrite)
    except BaseException as exc:
        # torchrun prints this file's message in its failure summary
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(exc)
        if isinstance(exc, AsmnetError):
            raise AsmnetError(f"rank {ctx.rank}/{ctx.world_size}: {exc}") from None
        if distributed.is_peer_failure(exc):  # the cause is another rank's: say so in one line
            raise AsmnetError(f"rank {ctx.rank}/{ctx.world_size}: lost contact with the other ranks "
                              f"({first_line(exc, 200)}); "
                              "another rank failed or stalled: see its message and torchrun's summary") from None
        raise
    return _train_status(result) if ctx.rank == 0 else EXIT_OK


def _train_status(result: dict) -> int:
    """Exit status of a finished run: 1 when some files were skipped (listed again at the end)."""
    skipped = result.get("skipped") or []
    if skipped:
        print(f"asmnet: trained without {len(skipped)} unusable files:\n" + "\n".join(f"  {e}" for e in skipped),
              file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


# -- demo --------------------------------------------------------------------------------------
def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="landmarks + pose on a public-domain photo (skimage's astronaut)")
    p.add_argument("--out", default="asmnet-demo", metavar="DIR",
                   help="write NAME_annotated.jpg and NAME.json (asmnet predict's record) here, and the astronaut "
                   "as astronaut.png (default: %(default)s)")
    p.add_argument("--image", default=None, help="use this image instead of the astronaut")
    add_model_flags(p)
    p.add_argument("--min-score", type=number(), default=None,
                   help="drop detections scoring below this (default: the detector's own threshold)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .api import FaceAligner
    from .draw import draw_faces, write_image
    from .fileio import check_writable_folder, write_json_atomic
    from .formats import read_image
    from .records import image_record, summary_lines

    out = Path(args.out)
    check_writable_folder(out)  # before the model loads and the photo is searched
    if args.image:
        image, name = read_image(args.image), Path(args.image).stem
    else:
        try:
            from skimage import data
        except ImportError:
            return _fail("the demo photo comes from scikit-image: pip install 'asmnet[demo]' (or pass --image)")
        image, name = np.ascontiguousarray(data.astronaut()[:, :, ::-1]), "astronaut"
    photo = Path(args.image) if args.image else out / f"{name}.png"  # the record's file: the photo itself
    if not args.image:
        write_image(photo, image)
    aligner = FaceAligner(args.model, detector=args.detector, backend=args.backend, threads=args.threads,
                          min_score=args.min_score, **detector_options(args))
    faces = aligner(image, channel_order="bgr")
    write_image(out / f"{name}_annotated.jpg", draw_faces(image, faces))
    record = image_record(photo, None, (image.shape[1], image.shape[0]), faces, aligner.model.info.name,
                          aligner.pixel_origin)  # asmnet predict's record of the same photo
    write_json_atomic(out / f"{name}.json", record)
    print("\n".join(summary_lines(record, str(photo))))
    written = [] if args.image else [photo]
    print(f"wrote {', '.join(map(str, [*written, out / (name + '_annotated.jpg')]))} and {out / (name + '.json')}")
    return EXIT_OK if faces else EXIT_SOME_FAILED


# -- predict -----------------------------------------------------------------------------------
def _refine_passes(text: str) -> int:
    value = int(text) if text.strip().isdigit() else -1
    if not 0 <= value <= 5:
        raise argparse.ArgumentTypeError(f"expected 0 to 5 passes, got {text!r}")
    return value


def add_second_look(p: argparse.ArgumentParser, default_refine: int) -> None:
    """--refine / --no-straighten: the second look from the predicted landmarks."""
    p.add_argument("--refine", type=_refine_passes, default=default_refine, metavar="N",
                   help="second-look passes: crop again from the predicted points and predict again "
                   "(default %(default)s" + (": the published one-pass protocol)" if default_refine == 0 else ")"))
    p.add_argument("--no-straighten", action="store_true",
                   help="second look: keep the crop axis-aligned instead of turning the face upright")
    p.add_argument("--no-early-stop", action="store_true",
                   help="second look: always run every --refine pass (by default a face the first re-crop "
                   "moved by <= 3 %% of its eye distance and turned by <= 10 degrees stops there)")
    p.add_argument("--refine-regions", action="store_true", default=None,
                   help="last, move the points with the model's refiner (its package's refiner/: 'accurate' "
                   "looks at each face part again at the image's own resolution, then corrects every point "
                   "from the whole shape; 'default' only corrects; both use it unless --no-refine-regions; "
                   "asmnet refiner trains one)")
    p.add_argument("--no-refine-regions", dest="refine_regions", action="store_false",
                   help="do not use the model's refiner (the network's own points)")


def add_predict(sub: argparse._SubParsersAction) -> None:
    from .inference import DEFAULT_REFINE

    p = sub.add_parser("predict", help="landmarks + pose for images, folders, videos or a webcam",
                       description="Prints each image's faces (box, pose, quality, flagged) and writes annotated "
                       "images/videos (--out) and one JSON record per image or frame (--json, JSON Lines, "
                       "streamed). Exit 0: all inputs done; 1: some failed; 2: none.")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders (recursive) or video files")
    p.add_argument("--webcam", nargs="?", const=0, type=whole(0, 1024), default=None, metavar="INDEX",
                   help="track faces live from camera INDEX (default 0) until Ctrl-C or --max-frames")
    p.add_argument("--out", default=None, metavar="DIR", help="write annotated images / videos here")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="JSON Lines output, one record per image/frame; - writes them to standard output "
                   "(the faces in words then go to standard error)")
    add_model_flags(p, threads_help="inference threads per process (default: 1 for images, one process per "
                    "--workers; ONNX Runtime's choice for videos)")
    p.add_argument("--min-score", type=number(), default=None, help="drop detections scoring below this")
    p.add_argument("--flip-tta", action="store_true", help="average with the mirrored face (2x network time)")
    p.add_argument("--pixel-origin", type=float, default=0.0, choices=(0.0, 1.0), metavar="{0,1}",
                   help="the first pixel's centre in the output coordinates: 0 (default) OpenCV / dlib, "
                   "1 the iBUG .pts annotation convention")
    add_second_look(p, default_refine=DEFAULT_REFINE)
    p.add_argument("--rotation-search", action="store_true",
                   help="when no face is found upright, search the image turned by 90, 180 and 270 degrees")
    p.add_argument("--workers", type=whole(1, 256), default=1, help="processes for image folders")
    p.add_argument("--resume", action="store_true",
                   help="skip inputs already in the --json file and append to it (refused when it holds other "
                   "lines, or records of another --model or --pixel-origin)")
    add_engine_flags(p, local="processes of this machine (--workers)", ray="images only")
    p.add_argument("--redetect-every", type=whole(1, 1_000_000), default=15, metavar="K",
                   help="video: re-run the detector every K frames")
    p.add_argument("--no-smooth", action="store_true", help="video: no temporal smoothing")
    p.add_argument("--max-frames", type=whole(1, 2**62), default=None, metavar="N",
                   help="videos and webcam: stop after N frames of each (default: all)")
    p.set_defaults(func=cmd_predict)


def add_engine_flags(p: argparse.ArgumentParser, local: str, ray: str) -> None:
    """``--engine`` and the ``--ray-*`` flags (predict and align), with the same meaning in both;
    ``local`` / ``ray``: what the two engines are for this command, for the help."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help=f"local: {local}; ray: the actors of a Ray cluster, {ray} (needs pip install 'asmnet[ray]')")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="Ray cluster to join (auto, HOST:6379 or ray://HOST:10001); default: start a local one")
    p.add_argument("--ray-actors", type=whole(1, 100_000), default=None, metavar="N",
                   help="Ray actors, one model each (default: as many as the cluster's CPUs allow)")
    p.add_argument("--ray-cpus", type=number(0, 1024, low_open=True), default=1.0, metavar="C",
                   help="CPUs per Ray actor (also its inference threads unless --threads)")
    p.add_argument("--ray-gpus", type=number(0, 1024), default=0.0, metavar="G",
                   help="GPUs per Ray actor: ONNX Runtime's CUDA provider (needs onnxruntime-gpu on the workers)")


def ray_options(args: argparse.Namespace) -> RayOptions | None:
    """The RayOptions of the ``--ray-*`` flags with ``--engine ray``; None with ``--engine local``."""
    if args.engine != "ray":
        return None
    from .jobs.ray_engine import RayOptions

    return RayOptions(address=args.ray_address, actors=args.ray_actors, cpus=args.ray_cpus, gpus=args.ray_gpus)


def cmd_predict(args: argparse.Namespace) -> int:
    from .jobs.predict import PredictOptions, predict, summary_line
    from .jobs.record_sink import STDOUT

    if not args.inputs and args.webcam is None:
        return _fail("give images, folders, videos or --webcam")
    opts = PredictOptions(model=args.model, detector=args.detector, backend=args.backend, threads=args.threads,
                          out_dir=args.out, json_path=args.json, workers=max(1, args.workers), resume=args.resume,
                          redetect_every=args.redetect_every, smooth=not args.no_smooth, max_frames=args.max_frames,
                          min_score=args.min_score, flip_tta=args.flip_tta, engine=args.engine,
                          pixel_origin=args.pixel_origin, detector_options=detector_options(args),
                          refine=args.refine, straighten=not args.no_straighten, rotation_search=args.rotation_search,
                          early_stop=not args.no_early_stop, refine_regions=args.refine_regions,
                          ray=ray_options(args))
    # the faces in words go to standard output, unless the records do (--json -)
    show = sys.stderr if args.json == STDOUT else sys.stdout
    report = predict(args.inputs, opts, webcam=args.webcam, show=show)
    print(summary_line(report), file=sys.stderr)
    return _batch_status(report.failures, bool(report.done or report.skipped))


# -- align -------------------------------------------------------------------------------------
def add_align(sub: argparse._SubParsersAction) -> None:
    from .align import CROP_SIZES, DEFAULT_SIZES, TEMPLATES

    p = sub.add_parser("align", help="aligned face crops (ArcFace 112, FFHQ, dlib chips) plus JSON",
                       description="Detects the faces of images, predicts their landmarks and writes each face "
                       "warped onto a template: OUT/<the input's path relative to the inputs>.faceK.png, and a JSON "
                       "Lines index (one record per image: faces, crop files, image->crop matrices). Inputs are "
                       "never overwritten. --engine ray: the crops are written by the actors of a Ray cluster, "
                       "the index by this process. Exit 0: all inputs done; 1: some failed; 2: none.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="write the crops here")
    p.add_argument("--json", default=None, metavar="FILE", help="the JSON Lines index (default: OUT/aligned.jsonl)")
    p.add_argument("--template", default="arcface", choices=TEMPLATES,
                   help="arcface: ArcFace/InsightFace 5-point similarity; ffhq: the FFHQ dataset's crop; "
                   "dlib: like dlib's get_face_chip (default: %(default)s)")
    p.add_argument("--size", type=whole(*CROP_SIZES), default=None, metavar="PX",
                   help="crop side in pixels (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_SIZES.items()) + ")")
    p.add_argument("--format", default="png", choices=("png", "jpg"), help="crop file format (default: %(default)s)")
    add_model_flags(p)
    p.add_argument("--min-score", type=number(), default=None, help="drop detections scoring below this")
    p.add_argument("--pixel-origin", type=float, default=0.0, choices=(0.0, 1.0), metavar="{0,1}",
                   help="the first pixel's centre in the JSON's landmarks: 0 (default) OpenCV / dlib, 1 iBUG .pts")
    p.add_argument("--skip-flagged", action="store_true",
                   help="no crop (and no record) for faces flagged as likely failures by the quality score")
    add_engine_flags(p, local="this process", ray="which write the crops (the index is written here)")
    p.set_defaults(func=cmd_align)


def cmd_align(args: argparse.Namespace) -> int:
    from .jobs.align import AlignOptions, align_inputs

    # the local engine and every Ray actor build the same FaceAligner from these (FaceAligner.from_settings)
    opts = AlignOptions(model=args.model, detector=args.detector, backend=args.backend, threads=args.threads,
                        min_score=args.min_score, pixel_origin=args.pixel_origin,
                        detector_options=detector_options(args), engine=args.engine, ray=ray_options(args))
    records, failures = align_inputs(args.inputs, args.out, args.template, args.size, args.format,
                                     args.json, options=opts, skip_flagged=args.skip_flagged)
    crops = sum(len(r["faces"]) for r in records)
    print(f"asmnet: {len(records)} images aligned, {crops} crops in {args.out}, {len(failures)} failed",
          file=sys.stderr)
    return _batch_status(failures, bool(records))


# -- evaluate ----------------------------------------------------------------------------------
def add_evaluate(sub: argparse._SubParsersAction) -> None:
    from .metrics import NORMALISATIONS

    p = sub.add_parser("evaluate", help="NME / FR / AUC / pose MAE on annotated faces",
                       description="Evaluate a model. Default protocol: the face box is the tight box of "
                       "the ground-truth points; --detector puts a real detector in the loop.")
    p.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="300W-layout folder, WFLW list (.txt) or .mat folder; repeatable")
    add_model_flags(p, detector=None, detector_help="run this face detector and crop its calibrated box "
                    "(default: the ground-truth tight box, the protocol of published tables)")
    p.add_argument("--keys", default=None, metavar="FILE",
                   help="evaluate only these faces: a run's split.json (its validation keys) or a text "
                   "file with one key (folder/stem) per line")
    p.add_argument("--norm", default="inter-ocular", choices=NORMALISATIONS,
                   help="NME normalising distance: outer eye corners, eye centres or the box's sqrt(w*h) "
                   "(default: %(default)s)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the full results here")
    p.add_argument("--ced", default=None, metavar="OUT.png", help="plot the CED curve")
    p.add_argument("--asm-blend", type=number(0, 1), default=0.0, help="blend predictions towards their ASM projection")
    p.add_argument("--flip-tta", action="store_true", help="average with the mirrored face (2x network time)")
    p.add_argument("--annotation-origin", type=number(-1e6, 1e6), default=None, metavar="ORIGIN",
                   help="the first pixel's centre in the annotations (iBUG .pts: 1, 0-based files: 0); "
                   "default: the convention of the model's training data")
    p.add_argument("--keep-off-image", action="store_true",
                   help="evaluate also faces whose points lie off their image (skipped with a line each by default)")
    add_second_look(p, default_refine=0)
    p.add_argument("--batch-size", type=whole(1, 4096), default=32, metavar="N",
                   help="faces per network call (default: %(default)s)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate, recorded_training_faces, training_note
    from .fileio import check_writable_file, write_json_atomic
    from .formats import load_many
    from .inference import EARLY_STOP
    from .regions import load_refiner
    from .runtime import load_model, resolve_model

    if args.ced and _missing("matplotlib"):  # say so now, not after the evaluation
        return _fail("--ced draws with matplotlib, which is not installed: pip install matplotlib "
                     "(it comes with 'asmnet[train]'), or leave --ced out")
    for target in (args.json, args.ced):  # an output that cannot be written fails before the work
        if target:
            check_writable_file(target)
    model = load_model(args.model, backend=args.backend, threads=args.threads)
    records, errors = load_many(args.data, n_points=model.info.markup.n_points)
    notes = [e for e in errors if isinstance(e, DataNote)]  # faces kept (without pose): not failures
    errors = [e for e in errors if not isinstance(e, DataNote)]
    for err in notes:
        print(f"asmnet: note: {err}", file=sys.stderr)
    for err in errors:
        print(f"asmnet: skipped: {err}", file=sys.stderr)
    if args.keys:
        from .evaluation import read_keys

        wanted = read_keys(args.keys)
        records = [r for r in records if r.key in wanted]
    detector = None
    if args.detector:
        from .detection import make_detector

        detector = make_detector(args.detector, **detector_options(args))
    training = recorded_training_faces(resolve_model(args.model), model.info)  # None: the model records none
    res = evaluate(model, records, args.norm, detector, args.batch_size, args.asm_blend, flip_tta=args.flip_tta,
                   annotation_origin=args.annotation_origin, keep_off_image=args.keep_off_image,
                   refine=args.refine, straighten=not args.no_straighten,
                   early_stop=None if args.no_early_stop else EARLY_STOP,
                   training=training, refiner=None if args.refine_regions is False else
                   load_refiner(args.model, required=bool(args.refine_regions)))
    res.annotation_errors = [str(e) for e in errors]
    res.annotation_notes = [str(e) for e in notes]
    for line in res.unreadable:
        print(f"asmnet: skipped: {line}", file=sys.stderr)
    print(f"model {res.model}: {res.n} faces, NME ({args.norm}) mean {res.nme_mean:.3f} %, "
          f"median {res.nme_median:.3f} %, FR@8% {res.fr_8:.2f} %, FR@10% {res.fr_10:.2f} %, "
          f"AUC@0.08 {res.auc_8:.4f}, AUC@0.10 {res.auc_10:.4f}")
    _print_folders(res)
    if res.pose_mae:
        print("  pose MAE (deg): " + ", ".join(f"{k} {v:.2f}" for k, v in res.pose_mae.items()))
    if detector is not None:
        print(f"  detector {detector.name}: {res.detector_misses} misses ({res.miss_rate:.2f} %)")
    if args.json:
        write_json_atomic(args.json, res.to_dict())
    if args.ced:
        from .metrics import plot_ced

        plot_ced({res.model: res.nmes}, args.ced)
    note = training_note(res, training) if training is not None else None
    if note:
        print(f"asmnet: note: {note}", file=sys.stderr)
    failed = errors or res.unreadable
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _print_folders(res: EvaluationResult) -> None:
    """Each --data folder's NME, then each folder inside it that holds images (when there are
    several levels, e.g. 300w/test/helen and 300w/test/ibug), with the faces the model trained on."""
    from .evaluation import key_subfolder
    from .formats import key_folder

    trained: dict[str, int] = {}
    for key in res.training_faces:
        for name in {key_folder(key), key_subfolder(key)}:
            trained[name] = trained.get(name, 0) + 1

    def line(name: str, v: Any, indent: str) -> str:  # v: a FolderResult
        seen = f", {trained[name]} of them training faces" if name in trained else ""
        return f"{indent}{name}: {v.n} faces, NME mean {v.nme_mean:.3f} %, median {v.nme_median:.3f} %{seen}"

    for folder, v in res.per_folder.items():
        print(line(folder, v, "  "))
        inside = {name: sub for name, sub in res.per_subfolder.items() if key_folder(name) == folder and name != folder}
        for name, sub in inside.items():
            print(line(name, sub, "    "))


# -- export ------------------------------------------------------------------------------------
def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="checkpoint -> model package (ONNX + model.json + weights)")
    p.add_argument("--model", required=True, help="a .pt checkpoint (best.pt / last.pt)")
    p.add_argument("--out", required=True, help="a folder (package) or a file ending in .onnx")
    p.add_argument("--name", default=None,
                   help="the model's name in model.json and in every JSON record (default: OUT's name)")
    p.add_argument("--int8", action="store_true",
                   help="also write OUT-int8/ (named NAME-int8): ONNX Runtime static INT8 quantisation calibrated on "
                   "--calib-data faces")
    p.add_argument("--calib-data", action="append", default=[], metavar="DIR",
                   help="training faces for --int8 and for fitting detector box calibrations (default: the "
                   "run's own --data folders, less its validation faces); repeatable")
    p.add_argument("--calib-count", type=whole(1, 1_000_000), default=300, metavar="N",
                   help="use N faces drawn from the calibration data (default: %(default)s)")
    p.add_argument("--exclude-keys", default=None, metavar="FILE",
                   help="a split.json: keep its validation faces out of the calibration")
    p.add_argument("--fit-calibrations", action="store_true",
                   help="fit the detector box calibrations on the training faces even when the shipped ones apply "
                   "(68 points in the .pts convention), e.g. for annotations drawn in another style")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    if _missing("torch"):
        return _fail(f"export reads a PyTorch checkpoint; {TORCH_EXTRA}")
    from .evaluation import read_keys
    from .formats import load_many
    from .packaging.export import export_model

    if args.int8 and Path(args.out).suffix == ".onnx":  # before the export, not after it
        return _fail("--int8 needs a package folder as --out")
    skip = read_keys(args.exclude_keys) if args.exclude_keys else set()
    records, data = None, None
    if args.calib_data:
        loaded, errors = load_many(args.calib_data)
        for err in errors:
            print(f"asmnet: skipped: {err}", file=sys.stderr)
        records = [r for r in loaded if r.key not in skip]
    elif args.int8:  # the run's own training faces, as for the box calibrations
        from .nn.checkpoint import load_checkpoint
        from .packaging.export import training_faces

        loaded, data = training_faces(load_checkpoint(args.model), args.model)
        records = [r for r in loaded if r.key not in skip]
        if not records:
            return _fail(f"--int8 needs annotated faces to calibrate on: {args.model} names no training data "
                         "that is still there (--calib-data DIR)")
        print(f"INT8 calibration: the run's training faces ({', '.join(data)}, less its validation faces)")
    rep = export_model(args.model, args.out, args.name, calib_faces=records, fit_calibrations=args.fit_calibrations,
                       calib_count=args.calib_count, calib_data=data)
    print(f"wrote {rep.onnx} ({rep.onnx_bytes / 1e6:.1f} MB) and {rep.json}"
          + (f" and {rep.weights}" if rep.weights else ""))
    print(f"denormal weights flushed to zero: {rep.denormals_flushed}; "
          f"ONNX Runtime vs PyTorch max abs difference {rep.max_abs_diff:.2e}")
    source = rep.calibration_source
    if source["kind"] == "shipped":
        print(f"detector box calibrations: the shipped ones ({', '.join(source['detectors'])}): {source['why']}")
    else:
        print(f"detector box calibrations fitted on {source['faces']} training faces: {', '.join(source['detectors'])}"
              + "".join(f"; {k} not fitted ({v})" for k, v in source["not_fitted"].items()))
    quality = rep.quality_source
    if quality and quality["kind"] == "fitted":
        print(f"quality thresholds (at most {quality['max_flagged']:.0%} flagged) fitted on {quality['boxes_scored']} boxes "
              f"({quality['boxes']}) of {quality['faces']} faces, {quality['from']}: "
              + ", ".join(f"{kind} {value:.4g}" for kind, value in quality["thresholds"].items()))
    elif quality:
        print(f"no quality thresholds: {quality['why']}; this model's faces are not judged (flagged: null)")
    if args.int8:
        from .packaging.quantize import quantize_package

        package = rep.json.parent
        q = quantize_package(package, package.with_name(package.name + "-int8"), records or [], args.calib_count,
                             name=f"{args.name}-int8" if args.name else None)
        print(f"wrote {q.out}: INT8 model {q.bytes_int8 / 1e6:.1f} MB (float {q.bytes_float / 1e6:.1f} MB), "
              f"calibrated on {q.calibration_faces} faces")
    return EXIT_OK


# -- benchmark ---------------------------------------------------------------------------------
def add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="ms per face: detector, landmark stage, whole pipeline")
    p.add_argument("--image", default=None, help="a photo with a face (default: skimage's astronaut)")
    add_model_flags(p, backend=False, threads=False)
    p.add_argument("--backends", default="onnx,torch", help="comma-separated: onnx,torch")
    p.add_argument("--seconds", type=number(0, 3600, low_open=True), default=1.0, help="minimum time per measurement")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the measurements here")
    p.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import benchmark, format_report
    from .fileio import check_writable_file, write_json_atomic
    from .formats import read_image

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if not backends or any(b not in ("onnx", "torch") for b in backends):
        return _fail(f"--backends {args.backends!r}: expected a comma-separated list of onnx, torch")
    if args.json:
        check_writable_file(args.json)  # before the minutes of measuring
    if args.image:
        image = read_image(args.image)
    else:
        try:
            from skimage import data
        except ImportError:
            return _fail("pass --image (the default photo comes from scikit-image: pip install 'asmnet[demo]')")
        image = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    rep = benchmark(image, args.model, args.detector, backends,
                    min_seconds=args.seconds, detector_options=detector_options(args))
    print(format_report(rep))
    if args.json:
        write_json_atomic(args.json, rep)
    return EXIT_OK


# -- models ------------------------------------------------------------------------------------
def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="the shipped models (use their names with --model) and their validation numbers",
                       description="Lists the models shipped inside asmnet with the validation numbers of their "
                       "model cards (our validation split, ground-truth boxes, inter-ocular NME).")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the table as JSON")
    p.set_defaults(func=cmd_models)


def model_rows() -> list[dict]:
    """One row per shipped model: name, input, precision, validation numbers from its card."""
    from .runtime import DEFAULT_MODEL, MODELS_DIR, read_model_json, shipped_models

    rows = []
    for name in shipped_models():
        info = read_model_json(MODELS_DIR / name / "model.json")
        val = info.card.get("validation") or {}
        folders = val.get("per_folder") or {}
        rows.append({
            "name": name, "default": name == DEFAULT_MODEL, "input_size": info.input_size,
            "points": info.markup.n_points, "precision": str(info.card.get("precision", "?")).split(" ")[0],
            "parameters": info.card.get("parameters"), "val_faces": val.get("n"), "nme_mean": val.get("nme_mean"),
            "nme_lfpw": (folders.get("lfpw_train") or {}).get("nme_mean"),
            "nme_udacity": (folders.get("udacity_train") or {}).get("nme_mean"),
            "fr_0.10": val.get("fr_0.10"), "auc_0.08": val.get("auc_0.08"),
            "detectors": sorted(info.calibrations), "path": str(MODELS_DIR / name),
        })
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    def cell(value, fmt: str = "{:.2f}") -> str:
        return "-" if value is None else fmt.format(value)

    rows = model_rows()
    print(f"{'model':<14} {'input':>5} {'precision':<9} {'NME %':>6} {'LFPW':>6} {'Udacity':>7} {'FR@10 %':>7} "
          f"{'AUC@0.08':>8}  detectors with a box calibration")
    for r in rows:
        print(f"{r['name'] + (' *' if r['default'] else ''):<14} {r['input_size']:>5} {r['precision']:<9} "
              f"{cell(r['nme_mean']):>6} {cell(r['nme_lfpw']):>6} {cell(r['nme_udacity']):>7} {cell(r['fr_0.10']):>7} "
              f"{cell(r['auc_0.08'], '{:.3f}'):>8}  {', '.join(r['detectors']) or '-'}")
    print("* the default. Validation: our split of lfpw_train + udacity_train, ground-truth boxes, inter-ocular NME "
          "(model cards: MODEL_CARD.md in each folder). Use a name with --model NAME or FaceAligner(model=NAME).")
    if args.json:
        from .fileio import write_json_atomic

        write_json_atomic(args.json, rows)
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors in one line (``asmnet: error: ...``), status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_FATAL, f"asmnet: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``asmnet`` argument parser with every subcommand (:data:`COMMANDS`)."""
    parser = _Parser(
        prog="asmnet", description="68-point face landmarks and head pose (ASMNet): run the shipped model on "
        "photos, videos and webcams, evaluate, train and export models.",
        epilog="Exit status: 0 all done, 1 some inputs failed (listed), 2 nothing could be done, 130 interrupted. "
        "'asmnet COMMAND --help' describes a command.")
    parser.add_argument("--version", action="version", version=f"asmnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


COMMANDS = [add_demo, add_predict, add_align, add_evaluate, add_train, add_refiner, add_export, add_benchmark, add_info,
            add_models]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``asmnet`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status; known
    problems print one line. Bad arguments exit through argparse (``SystemExit(2)``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (one line, status 2): a status, like every other error
        if exc.code in (0, None):  # --help, --version
            raise
        return exc.code if isinstance(exc.code, int) else EXIT_FATAL
    try:
        with _notes_as_lines():
            return args.func(args)
    except AsmnetError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("asmnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _notes_as_lines() -> Iterator[None]:
    """Within it, each :class:`AsmnetWarning` (e.g. a model without a quality threshold) prints as
    one ``asmnet: note:`` line, once per text, from this process only (not from the worker
    processes it forks, which would repeat it), and Pillow's warnings about a damaged part of an
    image that still decodes (a corrupt EXIF block) are dropped: the library leaves them to the
    host's warning filters, the command line is the host here."""
    import multiprocessing
    import warnings

    seen: set[str] = set()
    show_others = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not issubclass(category, AsmnetWarning):
            show_others(message, category, filename, lineno, file, line)
        elif multiprocessing.parent_process() is None and str(message) not in seen:
            seen.add(str(message))
            print(f"asmnet: note: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", AsmnetWarning)
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        warnings.showwarning = show
        yield


if __name__ == "__main__":
    sys.exit(main())
