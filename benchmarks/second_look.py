"""The second look (re-crop from the predicted points, straightened) and the quality flag, measured.

For every validation face (``--keys``) and every rotation of its image (``--angles``; the canvas
grows so that nothing is cut), two box protocols: ``gt`` (the tight box of the rotated
ground-truth points, the published protocol) and each ``--detector`` in the loop (the detection
matched to the face, calibrated; misses counted). Each is run with every second-look setting
(refine passes 0/1/2, straightened or not). Writes ``--out`` (second_look.json: NME, FR, misses
per setting) and ``--quality-out`` (quality.json: for each kind of quality score, how well it
ranks failures, NME > 8 %, on the validation faces, the threshold that flags 5 % of them, the
failures it catches, and what it flags among deliberately bad boxes: faces turned by 90 / 180
degrees in an upright box, boxes moved by half a face, boxes on pictures without faces). The kinds:
``shape`` / ``flip`` / ``refine1`` / ``refine2`` (no error head needed) and, for a model with an
error head (model.json ``quality_model``), ``learned0`` / ``learned1`` / ``learned2`` from the same
runs (``Alignment.scores``). ``--write-thresholds`` stores those thresholds in the model's
model.json (quality fields only; the card's ``quality`` figures are the default kind's).

    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/second_look.py \\
        --data /work/shared/data/lfpw_train --data /work/shared/data/udacity_train \\
        --keys src/asmnet/models/default/val_keys.txt --detector dlib-hog --write-thresholds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine

from asmnet.evaluation import read_keys
from asmnet.fileio import write_json_atomic
from asmnet.formats import load_many, read_image
from asmnet.geometry import rotate_on_canvas, tight_box, transform_points
from asmnet.inference import DEFAULT_REFINE, EARLY_STOP, QUALITY_DEFINITION, align_faces, model_quality_kind
from asmnet.metrics import flag_report, nme, roc_auc
from asmnet.package import edit_model_json, set_quality_thresholds
from asmnet.runtime import load_model, resolve_model

SETTINGS = {  # name -> (refine, straighten, flip_tta, early_stop, mirror_recrop)
    "one_pass": (0, False, False, False, False),
    "one_pass_flip": (0, False, True, False, False),  # for the flip-gap quality score (angles 0, 90, 180 only)
    "refine1": (1, False, False, False, False),
    "refine1_straight": (1, True, False, False, False),
    "refine2": (2, False, False, False, False),
    "refine2_straight": (2, True, False, False, False),
    "refine2_early": (2, True, False, True, False),  # the default: stops after one re-crop that moved the face little
    "refine2_early_mirror": (2, True, False, True, True),  # the default with its first re-crop mirrored (not the default)
}
FLIP_ANGLES = (0.0, 90.0, 180.0)
# the setting whose quality score each kind of model.json's quality_thresholds is calibrated on
KIND_SETTING = {"shape": "one_pass", "flip": "one_pass_flip", "refine1": "refine1_straight",
                "refine2": "refine2_straight", "learned0": "one_pass", "learned1": "refine1_straight",
                "learned2": "refine2_early"}
FAIL_NME = 8.0
MAX_FLAGGED = 0.05  # the threshold flags at most this share of validation faces
NON_FACE_IMAGES = ("coffee", "chelsea", "rocket", "coins", "immunohistochemistry", "hubble_deep_field",
                   "brick", "grass", "gravel", "colorwheel", "clock", "moon", "text", "page")


def detector_boxes(detector, model, images, points_list) -> list[np.ndarray | None]:
    """The calibrated detection matched to each face (None = missed)."""
    from asmnet.detection import match_detection, to_reference_box

    calib = model.info.calibrations.for_detector(detector, model.info.name)
    out = []
    for image, points in zip(images, points_list):
        det = match_detection(detector.detect(image), points)
        out.append(None if det is None else to_reference_box(det.box, calib))
    return out


def shifted_box(box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The box moved by half its larger side in a random direction."""
    a = rng.uniform(0, 2 * np.pi)
    step = 0.5 * max(box[2] - box[0], box[3] - box[1]) * np.array([np.cos(a), np.sin(a)])
    return box + np.concatenate([step, step])


def non_face_boxes(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, box) pairs: square boxes of 40-60 % of the shorter side at random places on
    skimage pictures without a human face (the cat of ``chelsea`` included)."""
    from skimage import data

    rng = np.random.default_rng(seed)
    out = []
    pictures = []
    for name in NON_FACE_IMAGES:
        im = np.asarray(getattr(data, name)())
        im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) if im.ndim == 2 else np.ascontiguousarray(im[:, :, 2::-1])
        pictures.append(im)
    for i in range(count):
        im = pictures[i % len(pictures)]
        h, w = im.shape[:2]
        side = rng.uniform(0.4, 0.6) * min(h, w)
        x, y = rng.uniform(0, w - side), rng.uniform(0, h - side)
        out.append((im, np.array([x, y, x + side, y + side])))
    return out


def run_setting(model, images, boxes, refine, straighten, flip_tta=False, early_stop=False, mirror=False
                ) -> dict[str, np.ndarray]:
    """Per-face landmarks, angles and every kind of quality score these settings give
    (``score/KIND``) for faces with a box (the others get NaN)."""
    n = len(images)
    have = np.array([b is not None for b in boxes])
    idx = np.flatnonzero(have)
    res = {"landmarks": np.full((n, model.info.markup.n_points, 2), np.nan), "angle": np.full(n, np.nan)}
    for start in range(0, len(idx), 64):
        part = idx[start:start + 64]
        out = align_faces(model, [images[i] for i in part], np.arange(len(part)), np.stack([boxes[i] for i in part]),
                          refine=refine, straighten=straighten, flip_tta=flip_tta,
                          early_stop=EARLY_STOP if early_stop else None, mirror_recrop=mirror)
        res["landmarks"][part] = out.landmarks
        res.setdefault("passes", np.full(n, np.nan))[part] = out.passes
        res["angle"][part] = out.angles
        for kind, score in out.scores.items():
            res.setdefault(f"score/{kind}", np.full(n, np.nan))[part] = score
    return res


def summary(nmes: np.ndarray, n_total: int) -> dict:
    ok = nmes[np.isfinite(nmes)]
    if not ok.size:
        return {"n": 0, "misses": int(n_total), "miss_rate": 100.0}
    return {"n": int(ok.size), "misses": int(n_total - ok.size),
            "miss_rate": round(100.0 * (n_total - ok.size) / n_total, 3),
            "nme_mean": round(float(ok.mean()), 4), "nme_median": round(float(np.median(ok)), 4),
            "fr_0.08": round(100.0 * float((ok > 8).mean()), 3), "fr_0.10": round(100.0 * float((ok > 10).mean()), 3)}


def quality_report(cache: dict[str, np.ndarray], proto_names: list[str]) -> dict:
    """Per quality kind: ranking of failures on validation faces (angle 0, every box protocol
    but ``shifted``), the threshold flagging MAX_FLAGGED of them, and the bad boxes it flags."""
    out: dict = {"fail_nme": FAIL_NME, "max_flagged": MAX_FLAGGED, "kinds": {}}
    for kind, setting in KIND_SETTING.items():
        score = f"{setting}/score/{kind}"
        if f"gt/0/{score}" not in cache:
            continue
        pools = {p: (cache[f"{p}/0/{score}"], cache[f"{p}/0/{setting}/nme"]) for p in proto_names}
        q = np.concatenate([v[0] for v in pools.values()])
        e = np.concatenate([v[1] for v in pools.values()])
        ok = np.isfinite(e)
        q, e = q[ok], e[ok]
        # the sorted score at the 95 % position itself: what lies above it is at most 5 % of the faces
        threshold = float(np.quantile(q, 1.0 - MAX_FLAGGED, method="higher"))
        rep = {"setting": setting, "threshold": threshold, "validation": pool_stats(q, e, threshold),
               "per_protocol": {p: pool_stats(v[0][np.isfinite(v[1])], v[1][np.isfinite(v[1])], threshold)
                                for p, v in pools.items()}, "bad_boxes": {}}
        for name, key in (("turned_90_upright_box", "gt/90"), ("turned_180_upright_box", "gt/180"),
                          ("moved_half_a_face", "shifted/0")):
            if f"{key}/{score}" in cache:
                bq, be = cache[f"{key}/{score}"], cache[f"{key}/{setting}/nme"]
                rep["bad_boxes"][name] = pool_stats(bq, be, threshold)
        if f"nonface/{score}" in cache:
            nq = cache[f"nonface/{score}"]
            rep["bad_boxes"]["non_face"] = {"n": int(nq.size), "flagged": round(float((nq > threshold).mean()), 4)}
        rep["rotated_with_detector"] = {
            key.split("/")[0] + "/" + key.split("/")[1]: pool_stats(cache[key], cache[key.replace(f"/score/{kind}", "/nme")],
                                                                     threshold)
            for key in cache if key.endswith(f"/{score}") and key.split("/")[0] not in ("gt", "shifted", "nonface")
            and key.split("/")[1] != "0" and np.isfinite(cache[key.replace(f"/score/{kind}", "/nme")]).any()}
        out["kinds"][kind] = rep
    return out


def pool_stats(q: np.ndarray, e: np.ndarray, threshold: float) -> dict:
    """ROC AUC of ``q`` for NME > FAIL_NME, flagged share, failures caught, at ``threshold``."""
    ok = np.isfinite(e)
    q, e = q[ok], e[ok]
    fail, flagged = e > FAIL_NME, q > threshold
    auc = roc_auc(q, fail)
    return {"n": int(q.size), "failures": int(fail.sum()), "roc_auc": None if auc is None else round(auc, 4),
            "flagged": round(float(flagged.mean()), 4) if q.size else None,
            "failures_caught": int((fail & flagged).sum()),
            "flagged_among_good": round(float(flagged[~fail].mean()), 4) if (~fail).any() else None,
            "median_nme_flagged": round(float(np.median(e[flagged])), 3) if flagged.any() else None}


def write_thresholds(package: Path, report: dict, default_kind: str, cache: dict[str, np.ndarray]) -> None:
    """Store each kind's threshold in the package's model.json, and the default kind's figures on
    the GT-box validation faces in its card's ``quality`` (as scripts/build_model.py measures
    them); no other field changes."""
    thresholds = {k: round(v["threshold"], 5) for k, v in report["kinds"].items()}
    threshold = thresholds[default_kind]
    setting = KIND_SETTING[default_kind]
    q, e = cache[f"gt/0/{setting}/score/{default_kind}"], cache[f"gt/0/{setting}/nme"]
    v = report["kinds"][default_kind]["validation"]  # ground-truth and detector boxes together
    with edit_model_json(package / "model.json") as meta:
        set_quality_thresholds(meta, thresholds, default_kind)
        meta.setdefault("card", {})["quality"] = {
            "definition": QUALITY_DEFINITION, **flag_report(q, e, threshold),
            "with_detector": {"boxes": " + ".join("ground truth" if p == "gt" else p
                                                  for p in report["kinds"][default_kind]["per_protocol"]),
                "n": v["n"], "roc_auc": v["roc_auc"], "flag_share": v["flagged"],
                "failures_caught": f"{v['failures_caught']} of {v['failures']}"}}


def rotation_search_report(model_name, detector, records, images, every: int) -> dict:
    """Faces turned by 90 / 180 / 270 degrees (np.rot90, exact) found by ``FaceAligner`` with and
    without ``rotation_search``: found = a returned face whose landmarks' tight box overlaps the
    ground truth's (IoU >= 0.3); NME of the best such face."""
    from asmnet.api import FaceAligner, rot90_matrix
    from asmnet.detection import box_iou

    out = {"faces": len(records[::every]), "every": every}
    for search in (False, True):
        aligner = FaceAligner(model_name, detector=detector, threads=1, rotation_search=search)
        for k in (0, 1, 2, 3):
            nmes, t0 = [], time.process_time()
            for rec, image in zip(records[::every], images[::every]):
                turned = np.ascontiguousarray(np.rot90(image, k))
                # in the aligner's output convention (pixel_origin), from the annotations' own
                truth = transform_points(rec.points - aligner.model.info.annotation_origin,
                                         rot90_matrix(k, image.shape)) + aligner.pixel_origin
                best = None
                for face in aligner(turned, channel_order="bgr"):
                    iou = box_iou(tight_box(face.landmarks), tight_box(truth))
                    if iou >= 0.3 and (best is None or iou > best[0]):
                        best = (iou, face)
                nmes.append(np.nan if best is None else float(nme(best[1].landmarks[None], truth[None],
                                                                  aligner.model.info.markup)[0]))
            res = summary(np.array(nmes), len(nmes))
            res["cpu_ms_per_image"] = round(1000 * (time.process_time() - t0) / len(nmes), 1)
            out[f"{'search' if search else 'upright_only'}/{90 * k}"] = res
            print(f"rotation search {search}, turned {90 * k}: {res}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--keys", required=True)
    ap.add_argument("--model", default=None, help="model name or folder (default: the shipped default)")
    ap.add_argument("--detector", action="append", default=[], help="detector(s) in the loop; repeatable")
    ap.add_argument("--angles", default="0,15,30,45,90,180")
    ap.add_argument("--detector-angles", default="0,15,30,45,90", help="rotations run with the detector(s) too")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--out", default="benchmarks/results/second_look.json")
    ap.add_argument("--quality-out", default="benchmarks/results/quality.json")
    ap.add_argument("--write-thresholds", action="store_true",
                    help="store the measured thresholds in the model's model.json (quality fields only)")
    ap.add_argument("--fit-on", choices=("all", "detector"), default="all",
                    help="fit the thresholds (5 %% flagged) on the ground-truth and detector boxes together, or on "
                    "the detectors' boxes only (what users get)")
    ap.add_argument("--cache", default=None, help="also write the per-face results here (npz)")
    ap.add_argument("--from-cache", default=None, metavar="NPZ",
                    help="skip the runs: redo quality.json (and --write-thresholds) from a --cache file")
    ap.add_argument("--nonface-boxes", type=int, default=280, help="boxes on pictures without faces")
    ap.add_argument("--rotation-search", default=None, metavar="OUT.json",
                    help="instead: measure FaceAligner(rotation_search=True) on faces turned by 90/180/270 "
                    "degrees with the first --detector, writing OUT.json")
    ap.add_argument("--every", type=int, default=3, help="--rotation-search: every N-th validation face")
    ap.add_argument("--limit", type=int, default=None, help="first N faces only (quick runs)")
    args = ap.parse_args(argv)

    model = load_model(args.model, threads=1)
    info = model.info
    records, _ = load_many(args.data, n_points=info.markup.n_points)
    wanted = read_keys(args.keys)
    records = [r for r in records if r.key in wanted][: args.limit]
    base_images = [read_image(r.image) for r in records]
    from asmnet.detection import make_detector

    detectors = [make_detector(name) for name in args.detector]
    if args.rotation_search:
        report = rotation_search_report(args.model, detectors[0], records, base_images, args.every)
        report["detector"] = {detectors[0].name: detectors[0].options()}
        write_json_atomic(args.rotation_search, stamp(report))
        return 0
    if args.from_cache:
        cache = {k: v for k, v in np.load(args.from_cache).items() if k != "keys"}
        return finish_quality(args, model, cache, [d.name for d in detectors])
    angles = [float(a) for a in args.angles.split(",")]
    detector_angles = [float(a) for a in args.detector_angles.split(",")]
    settings = {k: SETTINGS[k] for k in args.settings.split(",")}
    results: dict = {"model": info.name, "faces": len(records), "angles": angles, "fail_nme": FAIL_NME,
                     "default_refine": DEFAULT_REFINE,
                     "detectors": {d.name: d.options() for d in detectors}, "protocols": {}}
    cache: dict[str, np.ndarray] = {}
    t0 = time.process_time()
    for angle in angles:
        # points in the model's own convention (paper224 was trained with 1-based points read as 0-based)
        turned = [rotate_on_canvas(im, r.points - info.annotation_origin + info.label_origin, angle, info.label_origin)
                  for im, r in zip(base_images, records)]
        images = [t[0] for t in turned]
        gts = np.stack([t[1] for t in turned])
        protocols = {"gt": [tight_box(p) for p in gts]}
        if angle == 0:  # misplaced boxes: the GT box moved by half its size in a random direction
            rng = np.random.default_rng(0)
            protocols["shifted"] = [shifted_box(b, rng) for b in protocols["gt"]]
        if angle in detector_angles:
            for det in detectors:
                protocols[det.name] = detector_boxes(det, model, images, gts)
        for proto, boxes in protocols.items():
            for name, (refine, straighten, flip, early, mirror) in settings.items():
                if flip and angle not in FLIP_ANGLES:
                    continue
                res = run_setting(model, images, boxes, refine, straighten, flip, early, mirror)
                have = np.isfinite(res["landmarks"][:, 0, 0])
                nmes = np.full(len(records), np.nan)
                if have.any():
                    nmes[have] = nme(res["landmarks"][have], gts[have], info.markup)
                key = f"{proto}/{angle:g}/{name}"
                row = summary(nmes, len(records))
                if early and have.any():  # network passes per face (3 when none stops early)
                    row["mean_passes"] = round(float(np.nanmean(res["passes"][have])), 3)
                results["protocols"].setdefault(proto, {}).setdefault(f"{angle:g}", {})[name] = row
                cache[f"{key}/angle"], cache[f"{key}/nme"] = res["angle"], nmes
                cache.update({f"{key}/{k}": v for k, v in res.items() if k.startswith("score/")})
                print(f"{key}: {results['protocols'][proto][f'{angle:g}'][name]}  "
                      f"[{time.process_time() - t0:.0f} s CPU]", file=sys.stderr, flush=True)
    nonface = non_face_boxes(int(args.nonface_boxes))
    for name, (refine, straighten, flip, early, mirror) in settings.items():
        res = run_setting(model, [im for im, _ in nonface], [b for _, b in nonface], refine, straighten, flip, early,
                          mirror)
        cache.update({f"nonface/{name}/{k}": v for k, v in res.items() if k.startswith("score/")})
    results["cpu_seconds"] = round(time.process_time() - t0, 1)
    results["keys"] = [r.key for r in records]
    write_json_atomic(args.out, stamp(results))
    if args.cache:
        np.savez_compressed(args.cache, keys=np.array([r.key for r in records]), **cache)
    return finish_quality(args, model, cache, [d.name for d in detectors])


def finish_quality(args: argparse.Namespace, model, cache: dict[str, np.ndarray], detector_names: list[str]) -> int:
    """quality.json from the per-face results, and the thresholds into model.json when asked."""
    # the faces the thresholds are fitted on: every box protocol, or what users get (the detectors' boxes)
    quality = quality_report(cache, detector_names if args.fit_on == "detector" else ["gt", *detector_names])
    quality["fitted_on"] = args.fit_on
    quality["model"] = model.info.name
    write_json_atomic(args.quality_out, stamp(quality))
    for kind, rep in quality["kinds"].items():
        v = rep["validation"]
        print(f"quality {kind}: threshold {rep['threshold']:.4f}, AUC {v['roc_auc']:.3f}, flagged {v['flagged']:.3f}, "
              f"caught {v['failures_caught']} of {v['failures']}; bad boxes flagged: "
              + ", ".join(f"{k} {b['flagged']}" for k, b in rep["bad_boxes"].items()), file=sys.stderr)
    if args.write_thresholds:
        package = resolve_model(args.model)
        write_thresholds(package, quality, model_quality_kind(model, DEFAULT_REFINE, False), cache)
        print(f"wrote quality thresholds into {package / 'model.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
