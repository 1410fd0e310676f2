"""Fit the error head and the learned quality score on training faces, and ship them in a package.

    PYTHONPATH=src nice -n 10 .venv/bin/python scripts/fit_quality.py \\
        --data /work/shared/data/lfpw_train --data /work/shared/data/udacity_train \\
        --model src/asmnet/models/default --also src/asmnet/models/default-fp32 --write

Faces: every face of ``--data`` that is NOT in the package's validation keys (val_keys.txt; the
validation split is for measuring, benchmarks/second_look.py). The network has seen these faces,
so they are also run damaged (``--variants`` copies each, seeded): blur, low resolution,
occlusion, noise / contrast, image rotation (up to 70 degrees, sometimes 90 / 180 / 270) and a
jittered or misplaced box; plus each face with its ground-truth box and with ``--detector``'s
calibrated box. Each goes through the default pipeline (2 straightened second-look passes); each
pass gives the features the landmark head reads and the NME of that pass's points.

1. Error head: ridge regression (``--alpha``, standardised features) of ln(NME %) (clipped to
   [1, 50] %) on the features, over every pass of every face; a linear layer on the features.
2. Quality score per kind (asmnet.quality): least squares of ln(NME %) of the result on the
   head's output, out of fold (``--folds`` by identity / clip group, so the score is fitted on
   head outputs of faces the head was not fitted on), averaged over the passes that make the
   result, and ln(move + 0.05) of the last pass (learned1 / learned2); a move coefficient < 0 is
   set to 0 (the score must not fall when the points move more).

``--write`` adds the head to ``--model``'s graph (and each ``--also`` package's: the same head on
their own features), checks that landmarks and pose stay bit-identical, and stores the
coefficients in model.json ``quality_model``; the thresholds are measured afterwards on the
validation split by ``benchmarks/second_look.py --write-thresholds``. Without ``--write`` it only
reports. The report (``--report``) holds the training-fold figures and the coefficients.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from asmnet.evaluation import read_keys, reference_box
from asmnet.fileio import write_atomic, write_json_atomic
from asmnet.formats import load_many, read_image
from asmnet.geometry import rotate_on_canvas, tight_box
from asmnet.inference import align_faces
from asmnet.metrics import nme, roc_auc
from asmnet.package import ERROR_OUTPUT_DESCRIPTION, drop_learned_thresholds, edit_model_json, set_quality_model
from asmnet.packaging.error_head import attach_error_head, error_head_weights, expose_features, fit_ridge
from asmnet.quality import LEARNED_KINDS, QualityModel, QualityTerms
from asmnet.runtime import LandmarkModel, load_model
from asmnet.training.split import UDACITY_CLIP_PATTERN, group_key

MOVE_OFFSET = 0.05  # % of the eye distance; ln(m + offset) stays finite for a face that did not move
NME_CLIP = (1.0, 50.0)  # ln(NME) targets: beyond 50 % every failure is as bad; below 1 % noise
REFINE = 2


class FeatureModel(LandmarkModel):
    """The package's network (without any error head) that also keeps the features of every crop
    it runs, in call order."""

    backend = "onnx"

    def __init__(self, package: Path):
        base = load_model(package, backend="onnx", threads=1)
        self.info = base.info
        graph = expose_features(onnx.load(str(package / "model.onnx")))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
        self.session = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.features: list[np.ndarray] = []

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points, pose, feats = self.session.run(None, {"image": batch})
        self.features.append(feats.astype(np.float32))
        return points, pose


def perturb(image: np.ndarray, gt: np.ndarray, rng: np.random.Generator, others: list[np.ndarray], origin: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A damaged copy of a face: (image, points turned with it, a box, what was done); ``origin``:
    the points' pixel convention."""
    tags = []
    box0 = tight_box(gt)
    fs = max(box0[2] - box0[0], box0[3] - box0[1])
    im = image.copy()
    if rng.random() < 0.25:
        im = cv2.GaussianBlur(im, (0, 0), rng.uniform(0.01, 0.06) * fs)
        tags.append("blur")
    if rng.random() < 0.15:
        k, (h, w) = rng.uniform(2.5, 6.0), im.shape[:2]
        small = cv2.resize(im, (max(2, int(w / k)), max(2, int(h / k))), interpolation=cv2.INTER_AREA)
        im = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        tags.append("lowres")
    if rng.random() < 0.3:
        w, h = rng.uniform(0.25, 0.6, 2) * fs
        cx, cy = rng.uniform(box0[0], box0[2]), rng.uniform(box0[1], box0[3])
        x1, y1 = int(max(0, cx - w / 2)), int(max(0, cy - h / 2))
        x2, y2 = int(min(im.shape[1], cx + w / 2)), int(min(im.shape[0], cy + h / 2))
        if x2 > x1 and y2 > y1:
            r = rng.random()
            if r < 0.33:
                im[y1:y2, x1:x2] = rng.integers(0, 256, 3)
            elif r < 0.66:
                im[y1:y2, x1:x2] = rng.integers(0, 256, (y2 - y1, x2 - x1, 3))
            else:
                im[y1:y2, x1:x2] = cv2.resize(others[rng.integers(len(others))], (x2 - x1, y2 - y1))
            tags.append("occlusion")
    if rng.random() < 0.15:
        noisy = im.astype(np.float32) * rng.uniform(0.3, 1.6) + rng.normal(0, rng.uniform(3, 20), im.shape)
        im = np.clip(noisy, 0, 255).astype(np.uint8)
        tags.append("noise")
    r = rng.random()
    angle = rng.uniform(-70, 70) if r < 0.2 else float(rng.choice([90.0, 180.0, 270.0])) if r < 0.26 else 0.0
    if angle:
        im, gt = rotate_on_canvas(im, gt, angle, origin)
        tags.append(f"rotated{angle:.0f}")
    box = tight_box(gt)
    side, center = max(box[2] - box[0], box[3] - box[1]), (box[:2] + box[2:]) / 2
    r = rng.random()
    if r < 0.35:
        shift, scale = rng.uniform(-0.08, 0.08, 2), np.exp(rng.uniform(-0.12, 0.12))
    elif r < 0.8:
        shift, scale = rng.uniform(-0.3, 0.3, 2), np.exp(rng.uniform(-0.45, 0.45))
        tags.append("jitter")
    else:
        a = rng.uniform(0, 2 * np.pi)
        shift, scale = rng.uniform(0.35, 0.7) * np.array([np.cos(a), np.sin(a)]), np.exp(rng.uniform(-0.3, 0.3))
        tags.append("moved")
    center = center + shift * side
    half = scale * side / 2
    return im, gt, np.array([center[0] - half, center[1] - half, center[0] + half, center[1] + half]), \
        "+".join(tags) or "clean"


def run_group(model: FeatureModel, images: list[np.ndarray], gts: list[np.ndarray], boxes: list, chunk: int = 64
              ) -> dict[str, np.ndarray]:
    """Per face with a box: features (K, 3, F), per-pass points (K, 3, N, 2) and NMEs (K, 3),
    the result's NME (K,) and the face indices."""
    have = [i for i, b in enumerate(boxes) if b is not None]
    parts = []
    for start in range(0, len(have), chunk):
        idx = have[start:start + chunk]
        model.features.clear()
        trace: list[dict] = []
        out = align_faces(model, [images[i] for i in idx], np.arange(len(idx)), np.stack([boxes[i] for i in idx]),
                          refine=REFINE, straighten=True, trace=trace)
        feats = np.concatenate(model.features).reshape(REFINE + 1, len(idx), -1).transpose(1, 0, 2)
        gt = np.stack([gts[i] for i in idx])
        points = np.stack([t["points"] + model.info.label_origin for t in trace], 1)
        parts.append({"features": feats, "points": points, "gt": gt,
                      "pass_nme": np.stack([nme(points[:, k], gt, model.info.markup) for k in range(REFINE + 1)], 1),
                      "nme": nme(out.landmarks, gt, model.info.markup), "index": np.array(idx)})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def collect(args: argparse.Namespace, package: Path) -> dict[str, np.ndarray]:
    """Run every training face (ground-truth box, detector box, damaged copies) through the pipeline."""
    from asmnet.detection import make_detector

    model = FeatureModel(package)
    info = model.info
    val = read_keys(args.keys or package / "val_keys.txt")
    records = [r for r in load_many(args.data, n_points=info.markup.n_points)[0] if r.key not in val][: args.limit]
    images = [read_image(r.image) for r in records]
    gts = [r.points - info.annotation_origin + info.label_origin for r in records]
    detector = make_detector(args.detector)
    t0 = time.process_time()
    groups = {"gt": run_group(model, images, gts, [tight_box(g) for g in gts])}
    groups["detector"] = run_group(model, images, gts, [reference_box(r, im, model, detector)
                                                        for r, im in zip(records, images)])
    print(f"clean faces: {time.process_time() - t0:.0f} s CPU", file=sys.stderr, flush=True)
    rng = np.random.default_rng(args.seed)
    for v in range(args.variants):
        damaged = [perturb(im, g, rng, images, info.label_origin) for im, g in zip(images, gts)]
        res = run_group(model, [d[0] for d in damaged], [d[1] for d in damaged], [d[2] for d in damaged])
        res["tag"] = np.array([damaged[i][3] for i in res["index"]])
        groups[f"damaged{v}"] = res
        print(f"damaged copy {v}: {time.process_time() - t0:.0f} s CPU", file=sys.stderr, flush=True)
    flat = {f"{g}/{k}": v for g, d in groups.items() for k, v in d.items()}
    flat["keys"] = np.array([r.key for r in records])
    return flat


def iod(points: np.ndarray, markup) -> np.ndarray:
    a, b = markup.outer_eye_corners
    return np.maximum(np.linalg.norm(points[:, a] - points[:, b], axis=-1), 1e-6)


def kind_signals(d: dict[str, np.ndarray], head: np.ndarray, markup) -> dict[str, tuple]:
    """Per learned kind: (mean head output, last move in % of the eye distance or None, NME of the
    result) as the pipeline with refine 0 / 1 / 2 computes them (its passes are the first ones of
    the refine-2 run)."""
    p = d["points"]
    final2 = p[:, 1:].mean(1)
    move1 = 100 * np.linalg.norm(p[:, 1] - p[:, 0], axis=-1).mean(-1) / iod(p[:, 1], markup)
    move2 = 100 * np.linalg.norm(p[:, 2] - p[:, 1], axis=-1).mean(-1) / iod(final2, markup)
    return {"learned0": (head[:, 0], None, d["pass_nme"][:, 0]),
            "learned1": (head[:, 1], move1, d["pass_nme"][:, 1]),
            "learned2": (head[:, 1:].mean(1), move2, d["nme"])}


def fit_terms(e: np.ndarray, m: np.ndarray | None, target: np.ndarray) -> QualityTerms:
    """Least squares of ln(clipped target) on [1, e, ln(m + offset)]; a negative move weight -> 0."""
    y = np.log(np.clip(target, *NME_CLIP))
    cols = [np.ones_like(e), e] + ([np.log(m + MOVE_OFFSET)] if m is not None else [])
    coef = np.linalg.lstsq(np.stack(cols, 1), y, rcond=None)[0]
    if m is not None and coef[2] < 0:
        coef = np.append(np.linalg.lstsq(np.stack(cols[:2], 1), y, rcond=None)[0], 0.0)
    if coef[1] <= 0:
        raise SystemExit("the error head's output does not rank the training faces (weight <= 0); nothing written")
    return QualityTerms(float(coef[0]), float(coef[1]), float(coef[2]) if m is not None else 0.0, MOVE_OFFSET)


def flag_stats(score: np.ndarray, nmes: np.ndarray, share: float = 0.05) -> dict:
    fail = nmes > 8.0
    flagged = score > np.quantile(score, 1 - share, method="higher")  # at most ``share`` flagged
    auc = roc_auc(score, fail)
    return {"n": int(score.size), "failures": int(fail.sum()), "roc_auc": None if auc is None else round(auc, 4),
            "failures_caught_at_5pct": int((flagged & fail).sum())}


def pooled_stats(terms: QualityTerms, kind: str, signals: dict, names: list[str]) -> dict:
    """:func:`flag_stats` of one kind's score over the faces of the groups ``names``."""
    e, m, t = (None if signals[names[0]][kind][i] is None else np.concatenate([signals[n][kind][i] for n in names])
               for i in range(3))
    return flag_stats(terms.score(e, m), t)


def fit(args: argparse.Namespace, data: dict[str, np.ndarray], markup) -> tuple[np.ndarray, float, QualityModel, dict]:
    groups = sorted({k.split("/")[0] for k in data if "/" in k})
    keys = data["keys"]
    pattern = re.compile(UDACITY_CLIP_PATTERN)

    def folds(index: np.ndarray) -> np.ndarray:
        return np.array([zlib.crc32(group_key(keys[i], pattern).encode()) % args.folds for i in index])

    g = {name: {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith(name + "/")} for name in groups}
    x = np.concatenate([g[n]["features"].reshape(-1, g[n]["features"].shape[-1]) for n in groups]).astype(np.float64)
    y = np.log(np.clip(np.concatenate([g[n]["pass_nme"].reshape(-1) for n in groups]), *NME_CLIP))
    f = np.concatenate([np.repeat(folds(g[n]["index"]), REFINE + 1) for n in groups])
    out_of_fold = np.zeros(len(y))
    for k in range(args.folds):
        w, b = fit_ridge(x[f != k], y[f != k], args.alpha)
        out_of_fold[f == k] = x[f == k] @ w + b
    weight, bias = fit_ridge(x, y, args.alpha)
    heads, start = {}, 0
    for n in groups:
        size = g[n]["pass_nme"].size
        heads[n] = out_of_fold[start:start + size].reshape(-1, REFINE + 1)
        start += size
    signals = {n: kind_signals(g[n], heads[n], markup) for n in groups}
    terms, report = {}, {"alpha": args.alpha, "folds": args.folds, "samples": int(len(y)),
                         "faces": {n: int(len(g[n]["nme"])) for n in groups}, "kinds": {}}
    for kind in LEARNED_KINDS:
        e = np.concatenate([signals[n][kind][0] for n in groups])
        m = None if kind == "learned0" else np.concatenate([signals[n][kind][1] for n in groups])
        t = np.concatenate([signals[n][kind][2] for n in groups])
        terms[kind] = fit_terms(e, m, t)
        clean = [n for n in groups if not n.startswith("damaged")]
        report["kinds"][kind] = {"terms": terms[kind].__dict__,
                                 "train_clean_out_of_fold": pooled_stats(terms[kind], kind, signals, clean),
                                 "train_all_out_of_fold": pooled_stats(terms[kind], kind, signals, groups)}
        print(f"{kind}: {terms[kind]}; {report['kinds'][kind]['train_clean_out_of_fold']}", file=sys.stderr)
    held_out = Path(args.keys).name if args.keys else "val_keys.txt"
    fitted = {"by": "scripts/fit_quality.py", "faces": f"faces of {', '.join(Path(d).name for d in args.data)} not in "
              f"{held_out}: ground-truth box, {args.detector} box, and {args.variants} damaged copies each "
              f"(seed {args.seed})",
              "error_head": f"ridge alpha {args.alpha} on standardised features -> ln(NME %) clipped to "
              f"{list(NME_CLIP)}, every pass", "terms": f"least squares of ln(NME %) on out-of-fold head outputs "
              f"({args.folds} folds by identity / clip)", "samples": int(len(y))}
    return weight, bias, QualityModel(terms, fitted), report


def write_package(package: Path, weight: np.ndarray, bias: float, quality_model: QualityModel,
                  probe: np.ndarray, report: dict) -> dict:
    """Add the head to the package's graph, and quality_model and the card's ``error_head`` to its
    model.json; landmarks and pose must stay bit-identical on ``probe`` crops (NHWC uint8)."""
    path = package / "model.onnx"
    before = onnx.load(str(path))
    after = attach_error_head(before, weight, bias)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    batch = np.ascontiguousarray(probe.astype(np.float32).transpose(0, 3, 1, 2))
    old = ort.InferenceSession(before.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"image": batch})
    new = ort.InferenceSession(after.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"image": batch})
    if not (np.array_equal(old[0], new[0]) and np.array_equal(old[1], new[1])):
        raise SystemExit(f"{path}: landmarks or pose changed with the error head; nothing written")
    write_atomic(path, lambda tmp: onnx.save(after, str(tmp)))
    with edit_model_json(package / "model.json") as meta:
        set_quality_model(meta, quality_model.to_json())
        # thresholds measured on the scores of an earlier head (or on none) would flag the wrong
        # share: gone until benchmarks/second_look.py --write-thresholds measures this head's
        stale = drop_learned_thresholds(meta)
        if stale or "quality_thresholds" not in meta:
            print(f"{package}: no learned-score thresholds now; run benchmarks/second_look.py --model {package} "
                  "--write-thresholds", file=sys.stderr)
        meta.setdefault("card", {})["error_head"] = {
            "weights": int(weight.size), "multiply_adds_per_crop": int(weight.size), "output": ERROR_OUTPUT_DESCRIPTION,
            "fitted": quality_model.fitted, "landmarks_pose_bit_identical": True,
            "train_clean_out_of_fold": {k: v["train_clean_out_of_fold"] for k, v in report["kinds"].items()}}
    load_model(package, backend="onnx")  # validates graph and model.json together
    stored = error_head_weights(onnx.load(str(path)))
    return {"package": str(package), "probe_crops": int(len(probe)), "landmarks_pose_bit_identical": True,
            "error_head_bias": stored[1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--model", default="src/asmnet/models/default", help="the package (folder) to fit on")
    ap.add_argument("--also", action="append", default=[], help="other packages to give the same head (--write)")
    ap.add_argument("--keys", default=None, help="validation keys to leave out (default: the package's val_keys.txt)")
    ap.add_argument("--detector", default="dlib-hog")
    ap.add_argument("--variants", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--alpha", type=float, default=10.0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="first N training faces only (quick runs)")
    ap.add_argument("--cache", default=None, help="also write the collected features here (npz)")
    ap.add_argument("--from-cache", default=None, metavar="NPZ", help="fit on a --cache file instead of collecting")
    ap.add_argument("--report", default="benchmarks/results/quality_fit.json")
    ap.add_argument("--write", action="store_true", help="ship the head and coefficients (see the docstring)")
    args = ap.parse_args(argv)
    package = Path(args.model)
    info = load_model(package, backend="onnx").info
    if args.from_cache:
        data = dict(np.load(args.from_cache))
    else:
        data = collect(args, package)
        if args.cache:
            np.savez_compressed(args.cache, **data)
    weight, bias, quality_model, report = fit(args, data, info.markup)
    report["command"] = " ".join(["scripts/fit_quality.py", *(argv if argv is not None else sys.argv[1:])])
    if args.write:
        probe = np.random.default_rng(0).integers(0, 256, (16, info.input_size, info.input_size, 3), dtype=np.uint8)
        report["written"] = [write_package(Path(p), weight, bias, quality_model, probe, report)
                             for p in [package, *args.also]]
    write_json_atomic(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
