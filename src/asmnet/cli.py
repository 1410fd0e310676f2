"""The ``asmnet`` command line: info, train, evaluate, predict, export, benchmark.

Exit status: 0 when everything worked, 1 when some inputs failed (they are listed), 2 when nothing
could be done (bad arguments, unreadable model, no usable input), 130 on Ctrl-C. Known problems
print one line ``asmnet: error: <file>: <problem>``, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from . import __version__
from .errors import AsmnetError

EXIT_OK, EXIT_SOME_FAILED, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130
MODEL_HELP = "a shipped model's name (asmnet models lists them; default: default), a model folder, .onnx or .pt"


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
                       "--resume continues exactly where a run stopped. Data-parallel: --nproc N, or "
                       "torchrun --nproc-per-node N -m asmnet train ... (docs/distributed.md).")
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="a 300W-layout folder (.pts beside images), a WFLW list or a .mat folder; repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, metrics, card)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--stop-after", type=int, default=None, metavar="EPOCH",
                   help="stop after this epoch of the plan (continue later with --resume)")
    p.add_argument("--points", type=int, default=68, choices=(68, 98))
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--arch", default="asmnet", choices=("asmnet", "mnv2"))
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64,
                   help="global batch: with N processes each takes batch/N per step (must divide evenly)")
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
    p.add_argument("--label-origin", type=float, default=1.0,
                   help="pixel index of the first pixel's centre in the annotations (iBUG .pts: 1; 0-based: 0)")
    p.add_argument("--val-fraction", type=float, default=0.12)
    p.add_argument("--group-pattern", default=None, metavar="REGEX",
                   help="regex on the stem whose first group names a group kept on one side of the split "
                   r"(video clips: '^(?:testcsv_)?([A-Za-z][A-Za-z_.'-]*_\d)\d$' for Udacity frames)")
    p.add_argument("--oversample", action="append", default=[], metavar="FOLDER=N",
                   help="draw the training faces of the data folder FOLDER N times per epoch; repeatable")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (under DDP: cpu, or cuda:LOCAL_RANK)")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout before the heads")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train with N processes on this machine: launches torchrun --standalone "
                   "--nproc-per-node N -m asmnet train with the other arguments")
    p.add_argument("--no-sync-bn", action="store_true",
                   help="DDP: BatchNorm statistics per process instead of over the global batch (faster)")
    p.add_argument("--dist-timeout", type=float, default=15.0, metavar="MIN",
                   help="DDP: a rank that waits this many minutes for the others fails the job")
    p.set_defaults(func=cmd_train, _train_parser=p)


def _parse_oversample(items: list[str]) -> dict[str, int]:
    """``["lfpw_train=3"]`` -> ``{"lfpw_train": 3}``; a malformed item is a usage error."""
    out: dict[str, int] = {}
    for item in items:
        folder, _, times = item.rpartition("=")
        if not folder or not times.isdigit() or int(times) < 1:
            raise AsmnetError(f"--oversample {item!r}: expected FOLDER=N with a whole number N >= 1")
        out[folder] = int(times)
    return out


def _train_argv(args: argparse.Namespace) -> list[str]:
    """The train command's arguments as parsed, minus --nproc (for the processes torchrun starts)."""
    argv: list[str] = []
    for action in args._train_parser._actions:
        if not action.option_strings or action.dest in ("help", "nproc"):
            continue
        flag, value = max(action.option_strings, key=len), getattr(args, action.dest)
        if action.nargs == 0:  # a switch
            argv += [flag] if value else []
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
    from .training import distributed
    from .training.trainer import TrainConfig, train

    if args.nproc is not None and args.nproc < 1:
        return _fail(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc is not None and args.nproc > 1:
        return _launch_torchrun(args)
    cfg = TrainConfig(
        data=args.data, out=args.out, points=args.points, input_size=args.input_size, width=args.width,
        arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, init=args.init, ema=args.ema,
        warmup_epochs=args.warmup_epochs, loss=args.loss, point_loss=args.point_loss, variance=args.variance,
        pose_weight=args.pose_weight, bn_momentum=args.bn_momentum, head_l2=args.head_l2,
        crop_scale=args.crop_scale, label_origin=args.label_origin,
        val_fraction=args.val_fraction, group_pattern=args.group_pattern, split_seed=args.split_seed,
        seed=args.seed, workers=args.workers, device=args.device, dropout=args.dropout,
        sync_bn=not args.no_sync_bn, oversample=_parse_oversample(args.oversample),
    )
    ctx = distributed.env_context()
    if not ctx.enabled:
        return _train_status(train(cfg, resume=args.resume, stop_after=args.stop_after))
    try:
        result = train(cfg, resume=args.resume, stop_after=args.stop_after, timeout_min=args.dist_timeout)
    except BaseException as exc:
        # torchrun prints this file's message in its failure summary
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(exc)
        if isinstance(exc, AsmnetError):
            raise AsmnetError(f"rank {ctx.rank}/{ctx.world_size}: {exc}") from None
        if distributed.is_peer_failure(exc):  # the cause is another rank's: say so in one line
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise AsmnetError(f"rank {ctx.rank}/{ctx.world_size}: lost contact with the other ranks ({first}); "
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
    p.add_argument("--out", default="asmnet-demo", metavar="DIR")
    p.add_argument("--image", default=None, help="use this image instead of the astronaut")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--detector", default="auto")
    p.add_argument("--min-score", type=float, default=0.3,
                   help="drop detections scoring below this (default %(default)s: dlib's HOG also fires at ~0.1 "
                   "on two mission patches of the astronaut's suit)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .api import FaceAligner
    from .draw import draw_faces, write_image
    from .fileio import write_json_atomic
    from .formats import read_image

    out = Path(args.out)
    if args.image:
        image, name = read_image(args.image), Path(args.image).stem
    else:
        try:
            from skimage import data
        except ImportError:
            return _fail("the demo photo comes from scikit-image: pip install 'asmnet[demo]' (or pass --image)")
        image, name = np.ascontiguousarray(data.astronaut()[:, :, ::-1]), "astronaut"
        write_image(out / f"{name}.png", image)
    aligner = FaceAligner(args.model, detector=args.detector, min_score=args.min_score)
    faces = aligner(image, channel_order="bgr")
    write_image(out / f"{name}_annotated.jpg", draw_faces(image, faces))
    record = {"file": args.image or f"{name}.png", "frame": None, "image_size": [image.shape[1], image.shape[0]],
              "model": aligner.model.info.name, "detector": aligner.detector.name, "faces": [f.to_dict() for f in faces]}
    write_json_atomic(out / f"{name}.json", record)
    for i, f in enumerate(faces):
        print(f"face {i}: box {np.round(f.box).astype(int).tolist()}, yaw {f.yaw:+.1f}, pitch {f.pitch:+.1f}, "
              f"roll {f.roll:+.1f} deg, quality {f.quality:.4f}{' (flagged)' if f.flagged else ''}")
    print(f"wrote {out / (name + '_annotated.jpg')} and {out / (name + '.json')}")
    return EXIT_OK if faces else EXIT_SOME_FAILED


# -- predict -----------------------------------------------------------------------------------
def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="landmarks + pose for images, folders, videos or a webcam",
                       description="Writes annotated images/videos (--out) and one JSON record per image or "
                       "frame (--json, JSON Lines, streamed). Exit 0: all inputs done; 1: some failed; 2: none.")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders (recursive) or video files")
    p.add_argument("--webcam", nargs="?", const=0, type=int, default=None, metavar="INDEX")
    p.add_argument("--out", default=None, metavar="DIR", help="write annotated images / videos here")
    p.add_argument("--json", default=None, metavar="FILE", help="JSON Lines output, one record per image/frame")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--detector", default="auto", help="auto, dlib-hog, dlib-cnn, haar, yunet")
    p.add_argument("--min-score", type=float, default=None, help="drop detections scoring below this")
    p.add_argument("--flip-tta", action="store_true", help="average with the mirrored face (2x network time)")
    p.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"))
    p.add_argument("--threads", type=int, default=None, help="inference threads per process")
    p.add_argument("--workers", type=int, default=1, help="processes for image folders")
    p.add_argument("--resume", action="store_true", help="skip inputs already in the --json file")
    p.add_argument("--redetect-every", type=int, default=15, metavar="K", help="video: re-run the detector every K frames")
    p.add_argument("--no-smooth", action="store_true", help="video: no temporal smoothing")
    p.add_argument("--max-frames", type=int, default=None)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import PredictOptions, predict, summary_line

    if not args.inputs and args.webcam is None:
        return _fail("give images, folders, videos or --webcam")
    opts = PredictOptions(model=args.model, detector=args.detector, backend=args.backend, threads=args.threads,
                          out_dir=args.out, json_path=args.json, workers=max(1, args.workers), resume=args.resume,
                          redetect_every=args.redetect_every, smooth=not args.no_smooth, max_frames=args.max_frames,
                          min_score=args.min_score, flip_tta=args.flip_tta)
    report = predict(args.inputs, opts, webcam=args.webcam)
    print(summary_line(report), file=sys.stderr)
    if report.failures:
        print("asmnet: failed inputs:\n" + "\n".join(f"  {f}" for f in report.failures), file=sys.stderr)
        return EXIT_SOME_FAILED if report.done or report.skipped else EXIT_FATAL
    return EXIT_OK


# -- evaluate ----------------------------------------------------------------------------------
def add_evaluate(sub: argparse._SubParsersAction) -> None:
    from .metrics import NORMALISATIONS

    p = sub.add_parser("evaluate", help="NME / FR / AUC / pose MAE on annotated faces",
                       description="Evaluate a model. Default protocol: the face box is the tight box of "
                       "the ground-truth points; --detector puts a real detector in the loop.")
    p.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="300W-layout folder, WFLW list (.txt) or .mat folder; repeatable")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"))
    p.add_argument("--keys", default=None, metavar="FILE",
                   help="evaluate only these faces: a run's split.json (its validation keys) or a text "
                   "file with one key (folder/stem) per line")
    p.add_argument("--norm", default="inter-ocular", choices=NORMALISATIONS)
    p.add_argument("--detector", default=None, help="evaluate with this face detector in the loop")
    p.add_argument("--json", default=None, metavar="OUT", help="write the full results here")
    p.add_argument("--ced", default=None, metavar="OUT.png", help="plot the CED curve")
    p.add_argument("--asm-blend", type=float, default=0.0, help="blend predictions towards their ASM projection")
    p.add_argument("--flip-tta", action="store_true", help="average with the mirrored face (2x network time)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .fileio import write_json_atomic
    from .formats import load_many
    from .runtime import load_model

    model = load_model(args.model, backend=args.backend, threads=args.threads)
    records, errors = load_many(args.data, n_points=model.info.markup.n_points)
    for err in errors:
        print(f"asmnet: skipped: {err}", file=sys.stderr)
    if args.keys:
        from .evaluation import read_keys

        wanted = read_keys(args.keys)
        records = [r for r in records if r.key in wanted]
    detector = None
    if args.detector:
        from .detect import make_detector

        detector = make_detector(args.detector)
    res = evaluate(model, records, args.norm, detector, args.batch_size, args.asm_blend, flip_tta=args.flip_tta)
    res["annotation_errors"] = [str(e) for e in errors]
    for line in res["unreadable"]:
        print(f"asmnet: skipped: {line}", file=sys.stderr)
    print(f"model {res['model']}: {res['n']} faces, NME ({args.norm}) mean {res['nme_mean']:.3f} %, "
          f"median {res['nme_median']:.3f} %, FR@8% {res['fr_0.08']:.2f} %, FR@10% {res['fr_0.10']:.2f} %, "
          f"AUC@0.08 {res['auc_0.08']:.4f}, AUC@0.10 {res['auc_0.10']:.4f}")
    for folder, v in res["per_folder"].items():
        print(f"  {folder}: {v['n']} faces, NME mean {v['nme_mean']:.3f} %, median {v['nme_median']:.3f} %")
    if res["pose_mae"]:
        print("  pose MAE (deg): " + ", ".join(f"{k} {v:.2f}" for k, v in res["pose_mae"].items()))
    if detector is not None:
        print(f"  detector {detector.name}: {res['detector_misses']} misses ({res['miss_rate']:.2f} %)")
    if args.json:
        write_json_atomic(args.json, res)
    if args.ced:
        from .metrics import plot_ced

        plot_ced({res["model"]: np.array([p["nme"] for p in res["per_image"]])}, args.ced)
    failed = errors or res["unreadable"]
    return EXIT_SOME_FAILED if failed else EXIT_OK


# -- export ------------------------------------------------------------------------------------
def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="checkpoint -> model package (ONNX + model.json + weights)")
    p.add_argument("--model", required=True, help="a .pt checkpoint (best.pt / last.pt)")
    p.add_argument("--out", required=True, help="a folder (package) or a file ending in .onnx")
    p.add_argument("--name", default=None)
    p.add_argument("--int8", action="store_true",
                   help="also write OUT-int8/: ONNX Runtime static INT8 quantisation calibrated on --calib-data faces")
    p.add_argument("--calib-data", action="append", default=[], metavar="DIR", help="faces for INT8 calibration")
    p.add_argument("--calib-count", type=int, default=300)
    p.add_argument("--exclude-keys", default=None, metavar="FILE",
                   help="a split.json: keep its validation faces out of the calibration")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from .training.export import export_model

    rep = export_model(args.model, args.out, args.name)
    print(f"wrote {rep['onnx']} ({rep['bytes'] / 1e6:.1f} MB) and {rep['json']}"
          + (f" and {rep['weights']}" if rep["weights"] else ""))
    print(f"denormal weights flushed to zero: {rep['denormals_flushed']}; "
          f"ONNX Runtime vs PyTorch max abs difference {rep['max_abs_diff']:.2e}")
    if args.int8:
        from pathlib import Path

        from .evaluation import read_keys
        from .formats import load_many
        from .training.quantize import quantize_package

        package = Path(rep["json"]).parent
        if Path(args.out).suffix == ".onnx":
            return _fail("--int8 needs a package folder as --out")
        skip = read_keys(args.exclude_keys) if args.exclude_keys else set()
        records = [r for r in load_many(args.calib_data)[0] if r.key not in skip]
        q = quantize_package(package, package.with_name(package.name + "-int8"), records, args.calib_count)
        print(f"wrote {q['out']}: INT8 model {q['bytes_int8'] / 1e6:.1f} MB (float {q['bytes_float'] / 1e6:.1f} MB), "
              f"calibrated on {q['calibration_faces']} faces")
    return EXIT_OK


# -- benchmark ---------------------------------------------------------------------------------
def add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="ms per face: detector, landmark stage, whole pipeline")
    p.add_argument("--image", default=None, help="a photo with a face (default: skimage's astronaut)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--detector", default="auto")
    p.add_argument("--backends", default="onnx,torch", help="comma-separated: onnx,torch")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum time per measurement")
    p.add_argument("--json", default=None, metavar="OUT")
    p.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import benchmark, format_report
    from .fileio import write_json_atomic
    from .formats import read_image

    if args.image:
        image = read_image(args.image)
    else:
        try:
            from skimage import data
        except ImportError:
            return _fail("pass --image (the default photo comes from scikit-image: pip install 'asmnet[demo]')")
        image = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    rep = benchmark(image, args.model, args.detector, tuple(b for b in args.backends.split(",") if b),
                    min_seconds=args.seconds)
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
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asmnet", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"asmnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


COMMANDS = [add_demo, add_predict, add_evaluate, add_train, add_export, add_benchmark, add_info, add_models]


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
