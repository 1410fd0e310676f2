"""Turn a trained checkpoint into a shipped model package, measured on the validation split.

Step 1 (and, with --card-only, step 4) of the build chain in scripts/README.md;
scripts/build_shipped_model.sh runs the whole chain.

    python scripts/build_model.py --checkpoint runs/gpu/f128asm.pt --run-dir runs/gpu/sweep3/f128asm \
        --data ../shared/data/lfpw_train --data ../shared/data/udacity_train \
        --out src/asmnet/models/default --name default

Exports ONNX + weights, evaluates the validation faces of the run's split.json (ground-truth box
protocol), measures the quality score as a failure detector and the ASM blend option, times the
landmark stage, attaches detector box calibrations, and writes model.json's card and MODEL_CARD.md.

A shipped package whose run folder is gone is rebuilt from its own weights (e.g. after a change
to the export or the INT8 quantisation); its validation keys, training facts, detector box
calibrations and quality threshold are kept as they are, everything measured is measured again:

    python scripts/build_model.py --from-package src/asmnet/models/default --int8 \
        --data ../shared/data/lfpw_train --data ../shared/data/udacity_train

An INT8 package without weights (its checkpoint is gone) cannot be rebuilt; --from-package then
repairs its graph instead (quantize.float_head: pooling and heads return float) and re-measures
it; its float32 validation stays the one measured when it was built.

A package with an error head (model.json ``quality_model``, scripts/fit_quality.py) gets the same
head on its rebuilt graphs (the features may move a little: rerun fit_quality.py and
benchmarks/second_look.py --write-thresholds after a rebuild that changes them).

Those two scripts change model.json's card; MODEL_CARD.md follows it with

    python scripts/build_model.py --card-only src/asmnet/models/default [--measure-speed]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from asmnet.benchmark import cpu_name
from asmnet.errors import ModelError
from asmnet.evaluation import evaluate, read_keys
from asmnet.fileio import write_atomic, write_json_atomic, write_text_atomic
from asmnet.formats import key_folder, load_many
from asmnet.inference import DEFAULT_REFINE, QUALITY_DEFINITION
from asmnet.metrics import flag_report
from asmnet.nn.checkpoint import load_checkpoint, save_checkpoint
from asmnet.package import edit_model_json, read_model_document, set_quality_model
from asmnet.packaging.card import render_card
from asmnet.packaging.error_head import attach_error_head, error_head_weights
from asmnet.packaging.export import ExportResult, export_model
from asmnet.packaging.quantize import PRECISION as INT8_PRECISION
from asmnet.packaging.quantize import float_head, quantize_package, quantized_outputs
from asmnet.runtime import load_model

QUALITY_FLAG_SHARE = 0.05  # flag the least plausible 5 % of validation faces


def time_landmark_stage(model_dir: Path, threads: int, batch: int, repeats: int = 300) -> dict:
    """Wall-clock ms per face (median, p90) and, on one thread, CPU ms per face: the CPU time of
    the calling thread, which other processes on a shared machine inflate far less."""
    model = load_model(model_dir, backend="onnx", threads=threads)
    s = model.info.input_size
    crops = np.random.default_rng(0).integers(0, 255, (batch, s, s, 3), dtype=np.uint8)
    for _ in range(30):
        model.run(crops)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        model.run(crops)
        times.append((time.perf_counter() - t0) * 1000 / batch)
        cpu.append((time.thread_time() - c0) * 1000 / batch)
    out = {"threads": threads, "batch": batch, "ms_per_face_median": float(np.median(times)),
           "ms_per_face_p90": float(np.percentile(times, 90)), "load_average": os.getloadavg()[0]}
    if threads == 1:
        out["cpu_ms_per_face_median"] = float(np.median(cpu))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="default with --from-package: its weights.pt")
    ap.add_argument("--run-dir", default=None, help="the run folder (split.json, metrics.jsonl, model_card.json)")
    ap.add_argument("--from-package", default=None, metavar="DIR",
                    help="rebuild a shipped package instead: keys, training facts, box calibrations and quality "
                         "threshold come from DIR (and --out defaults to DIR)")
    ap.add_argument("--measure-speed", action="store_true",
                    help="with --from-package: time the landmark stage again (default: keep the card's timing, "
                         "measured on an idle machine; timings on a shared one mislead)")
    ap.add_argument("--keys", default=None, help="validation keys for --from-package (default: DIR/val_keys.txt); "
                    "with --checkpoint, the faces the card's validation is measured on (e.g. the models table's "
                    "benchmarks/splits/val_keys_lfpw_udacity.txt; part of the run's validation split, which "
                    "val_keys.txt keeps)")
    ap.add_argument("--card-only", default=None, metavar="DIR",
                    help="only re-render DIR/MODEL_CARD.md from DIR/model.json's card (after scripts/fit_quality.py "
                         "or benchmarks/second_look.py --write-thresholds changed it); with --measure-speed, time "
                         "the landmark stage again first")
    ap.add_argument("--data", action="append", default=[])
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default="default")
    ap.add_argument("--calibration", default="src/asmnet/models/detector_calibration.json")
    ap.add_argument("--baseline", action="append", default=[], help="JSON results of a peer (dlib_baseline.py)")
    ap.add_argument("--int8", action="store_true", help="ship the INT8 ONNX graph (float ONNX goes to OUT-fp32/)")
    ap.add_argument("--no-weights", action="store_true", help="ship no weights.pt (ONNX only)")
    ap.add_argument("--train-commit", default=None, help="commit of the code that trained it, if the run lacks it")
    ap.add_argument("--history", action="append", default=[], help="earlier run folders (pre-training) for the card")
    ap.add_argument("--history-package", default=None, metavar="DIR",
                    help="the package this run was initialised from (--init): its earlier stages and its own "
                         "training become this card's earlier stages (before any --history folders)")
    ap.add_argument("--ablation", default=None, help="JSON of the ASM-LOSS vs plain runs (benchmarks/results/ablation.json)")
    ap.add_argument("--ced", default=None, help="CED plot of this model and the --baseline peers (PNG)")
    args = ap.parse_args()
    if args.card_only:
        rerender_card(Path(args.card_only), args.measure_speed)
        return
    if not args.data:
        ap.error("--data is needed unless --card-only is given")
    if args.from_package:
        rebuild(args)
        return
    if not (args.checkpoint and args.run_dir and args.out):
        ap.error("--checkpoint, --run-dir and --out are needed unless --from-package is given")

    out, run = Path(args.out), Path(args.run_dir)
    keys = read_keys(run / "split.json")
    all_records = load_many(args.data)[0]
    table_keys = read_keys(args.keys) if args.keys else keys
    if not table_keys <= keys:
        ap.error(f"--keys {args.keys}: {len(table_keys - keys)} of its faces are not validation faces of the run")
    float_dir, report = build_packages(args.checkpoint, out, all_records, keys, args.int8, args.no_weights)
    m = measure(out, float_dir, [r for r in all_records if r.key in table_keys])
    model, res, float_res, threshold = m["model"], m["res"], m["float_res"], m["threshold"]
    quality_report, blends, speeds = m["quality"], m["asm_blend"], m["speeds"]
    train_card = json.loads((run / "model_card.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # read before the build: the package may be the one this build replaces
    inherited = package_stages(Path(args.history_package)) if args.history_package else []
    calibrations = json.loads(Path(args.calibration).read_text()) if Path(args.calibration).exists() else {}
    card = {
        "name": args.name,
        "architecture": train_card["config"]["arch"], "parameters": train_card["parameters"],
        "input_size": model.info.input_size,
        "training": {
            "data": data_description(all_records, train_card["config"]["data"]),
            "pose_labels": "pose.csv: 3DDFA_V2 teacher predictions (see shared/data/README.md)",
            "split": train_card["split"], "config": train_card["config"],
            "epochs_done": train_card["epochs_done"], "best_epoch": train_card["best_epoch"],
            "wall_time_s": train_card["wall_time_s"], "device": train_card["device"],
            "torch": train_card["torch"],
            "git_commit": args.train_commit if train_card["git_commit"] == "unknown" and args.train_commit
            else train_card["git_commit"],
            "earlier_stages": inherited + [
                {k: json.loads((Path(h) / "model_card.json").read_text()).get(k) for k in STAGE_KEYS}
                for h in args.history],
        },
        "validation": {k: res[k] for k in ("n", "nme_mean", "nme_median", "fr_0.08", "fr_0.10",
                                           "auc_0.08", "auc_0.10", "pose_mae", "per_folder")},
        "shape_model": {"components": model.info.shape_model.n_components,
                        "explained": model.info.shape_model.explained,
                        "variance_share": model.info.shape_model.variance_share},
        "quality": quality_report,
        "asm_blend": blends,
        "speed": {"cpu": cpu_name(), "backend": "onnxruntime", "landmark_stage": speeds},
        "precision": INT8_PRECISION if args.int8 else "float32",
        "float32_validation": {k: float_res[k] for k in ("nme_mean", "nme_median", "fr_0.08", "fr_0.10")},
        "denormals_flushed": report.denormals_flushed,
        "onnx_max_abs_diff": report.max_abs_diff,
        "baselines": {Path(b).stem: json.loads(Path(b).read_text())["results"] for b in args.baseline},
        "ablation": json.loads(Path(args.ablation).read_text()) if args.ablation else None,
        "epochs_val_nme": [round(h["val_nme"], 4) for h in history],
    }
    calibrations = {k: v["calibration"] for k, v in calibrations.items() if not k.startswith("_")}
    write_packages(out, float_dir, args.int8, calibrations, threshold, card, res, keys)
    if args.ced:
        plot_comparison(res, args.baseline, Path(args.ced), args.name)
    print(json.dumps({k: card[k] for k in ("validation", "quality", "asm_blend", "speed")}, indent=1))


STAGE_KEYS = ("config", "epochs_done", "wall_time_s", "device", "torch", "git_commit", "best", "best_epoch")


def package_meta(package: Path) -> dict:
    """``package``/model.json's document (asmnet.package); a folder without a valid one ends the
    script with a one-line message."""
    if not (package / "model.json").exists():
        raise SystemExit(f"{package}: no model.json (not a model package)")
    try:
        return read_model_document(package / "model.json")
    except ModelError as exc:
        raise SystemExit(str(exc)) from None


def package_stages(package: Path) -> list[dict]:
    """The training stages behind a built package: its card's earlier stages, then its own run
    (best = its validation NME at the selected epoch, float32, as a run folder's card records it)."""
    card = package_meta(package).get("card") or {}
    t = card.get("training")
    if not t or "config" not in t:
        raise SystemExit(f"{package / 'model.json'}: its card has no training record to carry")
    own = {k: t.get(k) for k in STAGE_KEYS if k != "best"}
    own["best"] = {"val_nme": card["epochs_val_nme"][t["best_epoch"] - 1]}
    return [*t.get("earlier_stages", []), own]


#: what each folder of ../shared/data holds (the card names the others by folder only)
FOLDER_SOURCES = {"lfpw_train": "300W LFPW train", "helen_train": "300W HELEN train", "afw": "300W AFW"}


def data_description(records: list, trained_from: list[str]) -> list[str]:
    """The card's data lines: each folder of ``records`` with its face count, and the paths the
    run read (a compact training pack is a copy of the same faces, downscaled)."""
    counts = Counter(key_folder(record.key) for record in records)
    lines = [f"{folder} ({counts[folder]:,} video frames)" if folder == "udacity_train"
             else f"{folder} ({FOLDER_SOURCES.get(folder, 'annotated faces')}, {counts[folder]:,} faces)"
             for folder in sorted(counts, key=lambda f: (f == "udacity_train", f))]
    return lines + [f"read from {', '.join(trained_from)}"]


def build_packages(checkpoint, out: Path, all_records: list, val_keys: set[str], int8: bool,
                   no_weights: bool) -> tuple[Path, ExportResult]:
    """Export ``checkpoint`` to ``out`` (float) or to ``out``-fp32 and ``out`` (INT8, calibrated on
    300 faces that are not validation faces); weights.pt in half precision. Returns the float
    package folder and the export report."""
    float_dir = out.with_name(out.name + "-fp32") if int8 else out
    # the packages get their calibrations in write_packages: nothing to carry or fit here
    report = export_model(checkpoint, float_dir, float_dir.name, extra={"calibrations": {}})
    if int8:
        train_faces = [r for r in all_records if r.key not in val_keys]
        quantize_package(float_dir, out, train_faces, count=300)
        (float_dir / "weights.pt").unlink()  # one copy of the weights, in the INT8 package
    weights = out / "weights.pt"
    if no_weights:
        weights.unlink(missing_ok=True)
    elif weights.exists():
        # half precision halves the file; the network computes in float32 after loading
        ckpt = load_checkpoint(weights)
        ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
        save_checkpoint(weights, ckpt)
    return float_dir, report


def measure(out: Path, float_dir: Path | None, records: list, threshold: float | None = None,
            speed: bool = True) -> dict:
    """Validation of the shipped and (if any) the float graph, the quality flag at ``threshold`` (default:
    the one flagging the worst QUALITY_FLAG_SHARE), ASM blends and landmark-stage speed."""
    float_res = evaluate(load_model(float_dir, backend="onnx"), records, progress=False).to_dict() if float_dir else None
    model = load_model(out, backend="onnx")
    res = evaluate(model, records).to_dict()
    # the quality flag as FaceAligner() uses it: the default second look's score
    pipeline = evaluate(model, records, refine=DEFAULT_REFINE, straighten=True, progress=False).to_dict()
    nmes = np.array([p["nme"] for p in pipeline["per_image"]])
    quality = np.array([p["quality"] for p in pipeline["per_image"]])
    if threshold is None:
        threshold = float(np.quantile(quality, 1 - QUALITY_FLAG_SHARE, method="higher"))  # flags at most 5 %
    quality_report = {"definition": QUALITY_DEFINITION, **flag_report(quality, nmes, threshold)}
    blends = {}
    for blend in (0.25, 0.5, 1.0):
        r = evaluate(model, records, asm_blend=blend, progress=False)
        blends[str(blend)] = {"nme_mean": r.nme_mean, "fr_0.10": r.fr_10}
    speeds = [time_landmark_stage(out, t, b) for t in (1, 2) for b in (1, 8)] if speed else None
    return {"model": model, "res": res, "float_res": float_res, "threshold": threshold,
            "quality": quality_report, "asm_blend": blends, "speeds": speeds}


def write_packages(out: Path, float_dir: Path, int8: bool, calibrations: dict, threshold: float, card: dict,
                   res: dict, keys: set[str], thresholds: dict | None = None) -> None:
    """model.json (calibrations, quality threshold, card), validation.json, val_keys.txt, MODEL_CARD.md;
    with INT8, the float package's model.json carries the same card with its own validation."""
    with edit_model_json(out / "model.json") as meta:
        meta["calibrations"] = calibrations
        meta["quality_threshold"] = threshold
        if thresholds:  # per quality-score kind (benchmarks/second_look.py --write-thresholds measures them)
            meta["quality_thresholds"] = thresholds
        meta["card"] = card
    if int8:
        with edit_model_json(float_dir / "model.json") as fmeta:
            fmeta.update({k: meta[k] for k in ("calibrations", "quality_threshold", "quality_thresholds") if k in meta})
            fmeta["card"] = {**card, "precision": "float32", "validation": card["float32_validation"]}
    write_json_atomic(out / "validation.json", res)
    write_text_atomic(out / "val_keys.txt", "".join(k + "\n" for k in sorted(keys)))
    write_text_atomic(out / "MODEL_CARD.md", render_card(card))


def rerender_card(package: Path, measure_speed: bool) -> None:
    """Write ``package``/MODEL_CARD.md from its model.json card; with ``measure_speed`` the card's
    landmark-stage timing is measured again first (and model.json gets it)."""
    meta = package_meta(package)
    if "card" not in meta:
        raise SystemExit(f"{package / 'model.json'}: no card to render (packages built by this script have one)")
    if measure_speed:
        speeds = [time_landmark_stage(package, t, b) for t in (1, 2) for b in (1, 8)]
        with edit_model_json(package / "model.json") as meta:
            meta["card"]["speed"] = {"cpu": cpu_name(), "backend": "onnxruntime", "landmark_stage": speeds}
    write_text_atomic(package / "MODEL_CARD.md", render_card(meta["card"]))


def carry_error_head(head: tuple[np.ndarray, float] | None, old_meta: dict, folders: list[Path]) -> None:
    """Give rebuilt graphs the error head the old package's graph had, and their model.json its
    ``quality_model`` (nothing when it had none)."""
    import onnx

    if head is None:
        return
    for folder in folders:
        graph = attach_error_head(onnx.load(str(folder / "model.onnx")), *head)
        write_atomic(folder / "model.onnx", lambda tmp, g=graph: onnx.save(g, str(tmp)))
        with edit_model_json(folder / "model.json") as meta:
            set_quality_model(meta, old_meta["quality_model"])


def repair_int8_graph(src: Path, dst: Path) -> None:
    """Write ``src``'s INT8 graph to ``dst`` with pooling and heads in float (quantize.float_head)."""
    import onnx

    graph = onnx.load(str(src))
    if not quantized_outputs(src):
        raise SystemExit(f"{src}: its outputs are not quantised; nothing to repair")
    float_head(graph)
    onnx.checker.check_model(graph)
    write_atomic(dst, lambda tmp: onnx.save(graph, str(tmp)))
    if quantized_outputs(dst):
        raise SystemExit(f"{dst}: outputs {quantized_outputs(dst)} are still quantised")


def rebuild(args: argparse.Namespace) -> None:
    """Rebuild the package ``args.from_package`` from its weights (see the module docstring)."""
    package = Path(args.from_package)
    out = Path(args.out) if args.out else package
    old = package_meta(package)
    float_package = package.with_name(package.name + "-fp32")
    old_float = package_meta(float_package) if args.int8 and float_package.exists() else None
    keys = read_keys(args.keys or package / "val_keys.txt")
    all_records = load_many(args.data)[0]
    repair = args.checkpoint is None and not (package / "weights.pt").exists()
    if repair:
        float_dir, report, old_float = None, None, None
        repair_int8_graph(package / "model.onnx", out / "model.onnx")
        if package != out:
            write_text_atomic(out / "model.json", (package / "model.json").read_text())
    else:
        import onnx

        head = error_head_weights(onnx.load(str(package / "model.onnx"))) if "quality_model" in old else None
        with tempfile.TemporaryDirectory() as tmp:  # the export may overwrite the weights it reads
            checkpoint = Path(tmp) / "weights.pt"
            ckpt = load_checkpoint(args.checkpoint or package / "weights.pt")
            # slim weights written before label_origin was kept in them: model.json has it
            ckpt.setdefault("label_origin", old["label_origin"])
            save_checkpoint(checkpoint, ckpt)
            float_dir, report = build_packages(checkpoint, out, all_records, keys, args.int8, args.no_weights)
        carry_error_head(head, old, [out] + ([float_dir] if args.int8 else []))
    m = measure(out, float_dir, [r for r in all_records if r.key in keys], old["quality_threshold"], args.measure_speed)
    res, float_res = m["res"], m["float_res"]
    card = {
        **old["card"],
        "name": out.name,
        "validation": {k: res[k] for k in ("n", "nme_mean", "nme_median", "fr_0.08", "fr_0.10",
                                           "auc_0.08", "auc_0.10", "pose_mae", "per_folder")},
        "quality": m["quality"],
        "asm_blend": m["asm_blend"],
        "speed": ({"cpu": cpu_name(), "backend": "onnxruntime", "landmark_stage": m["speeds"]}
                  if args.measure_speed else old["card"]["speed"]),
        "precision": INT8_PRECISION if args.int8 or repair else "float32",
    }
    if not args.measure_speed:
        card["speed"] = {**card["speed"], "note": "timed when the package was first built"}
    if repair:
        card["rebuilt_from"] = (f"{package}/model.onnx: its INT8 graph with the output and head quantisation removed "
                                "(quantize.float_head; no checkpoint to rebuild from)")
    else:
        card.update({
            "float32_validation": {k: float_res[k] for k in ("nme_mean", "nme_median", "fr_0.08", "fr_0.10")},
            "denormals_flushed": report.denormals_flushed,
            "onnx_max_abs_diff": report.max_abs_diff,
            "rebuilt_from": f"{package}/weights.pt (half precision) by scripts/build_model.py --from-package",
        })
    write_packages(out, float_dir, args.int8, old["calibrations"], old["quality_threshold"], card, res, keys,
                   old.get("quality_thresholds"))
    # everything in model.json but the card (measurements) is what it was
    for before, folder in ((old, out), (old_float, float_dir)):
        if folder is None:
            continue
        after = package_meta(folder)
        changed = [k for k in before or {} if k != "card" and before[k] != after.get(k)] if before else []
        if changed or (before and set(after) != set(before)):
            raise SystemExit(f"{folder}/model.json: fields changed by the rebuild: {changed or set(after) ^ set(before)}")
    print(json.dumps({k: card[k] for k in ("validation", "float32_validation", "quality", "speed")}, indent=1))


def plot_comparison(res: dict, baselines: list[str], out_png: Path, name: str) -> None:
    """CED of this model and of each peer's protocols on the same validation faces."""
    from asmnet.metrics import plot_ced

    curves = {f"asmnet {name} (GT box)": np.array([p["nme"] for p in res["per_image"]])}
    for b in baselines:
        data = json.loads(Path(b).read_text())
        for protocol, per_image in data.get("per_image", {}).items():
            values = np.array([v for v in per_image.values() if v is not None])
            curves[f"{Path(b).stem.split('_')[0]} ({protocol.replace('_', ' ')})"] = values
    plot_ced(curves, out_png, max_percent=10.0, title="validation faces (100 LFPW + 371 Udacity)")


if __name__ == "__main__":
    main()
