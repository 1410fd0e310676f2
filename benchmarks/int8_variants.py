"""Which parts of the network to leave in float when quantising: validation NME and point error.

    python benchmarks/int8_variants.py --float src/asmnet/models/default-fp32 \
        --data ../shared/data/lfpw_train --data ../shared/data/udacity_train \
        --keys src/asmnet/models/default/val_keys.txt --json benchmarks/results/int8_variants.json

Quantises the float package's graph with ONNX Runtime static QDQ (per-channel weights, min-max
calibration on 300 training faces, as asmnet's INT8 export) in several variants, then measures
each on the validation faces (ground-truth boxes) against the float graph: NME, mean and max
point difference in pixels, largest pose difference. Variants: everything quantised (the old
export, 8-bit outputs); outputs left float (``OpTypesToExcludeOutputQuantization``); heads
(Gemm) float; concat + heads float; pooling + flatten + concat + heads float (the export's
FLOAT_OPS). Out-of-distribution crops (the validation crops rotated 45 deg, zoomed 1.6x) show how
far each variant strays from float where the calibration faces never went.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine

from asmnet.evaluation import read_keys
from asmnet.fileio import write_json_atomic
from asmnet.formats import load_many, read_image
from asmnet.geometry import tight_box
from asmnet.inference import crop_faces, units_to_image
from asmnet.metrics import nme
from asmnet.packaging.quantize import calibration_crops
from asmnet.runtime import OnnxLandmarkModel, read_model_json

VARIANTS = {
    "all int8 (old export)": dict(),
    "outputs float": dict(extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm"]}),
    "heads float": dict(ops=("Gemm",)),
    "concat + heads float": dict(ops=("Concat", "Gemm")),
    "pooling + concat + heads float (shipped)": dict(ops=("GlobalAveragePool", "Flatten", "Concat", "Gemm")),
}


def quantize(src: Path, dst: Path, crops: np.ndarray, ops=(), extra_options=None) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": crops[i : i + 16]} for i in range(0, len(crops), 16)])

        def get_next(self):
            return next(self.batches, None)

    nodes = [n.name for n in onnx.load(str(src)).graph.node if n.op_type in ops]
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=nodes,
                    extra_options=extra_options or {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--float", required=True, help="a float32 model package")
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--keys", required=True)
    ap.add_argument("--calib-count", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    package = Path(args.float)
    info = read_model_json(package / "model.json")
    keys = read_keys(args.keys)
    records = load_many(args.data)[0]
    val = [r for r in records if r.key in keys]
    calib = calibration_crops([r for r in records if r.key not in keys], package, args.calib_count)
    crops, mats = zip(*(crop_faces(read_image(r.image), tight_box(r.points)[None], info) for r in val))
    crops, mats = np.concatenate(crops), np.concatenate(mats)
    s = info.input_size

    def warp(angle: float, scale: float) -> np.ndarray:
        m = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
        return np.stack([cv2.warpAffine(c, m, (s, s)) for c in crops])

    ood = {"rotated 45 deg": warp(45, 1.0), "zoomed 1.6x": warp(0, 1.6)}
    gts = np.stack([r.points for r in val])

    def run(onnx_path: Path) -> dict:
        model = OnnxLandmarkModel(onnx_path, info, threads=1)
        units, pose = model.run(crops)
        return {"points": units_to_image(units, mats, info), "pose": pose,
                **{k: model.run(v)[0] * s for k, v in ood.items()}}

    ref = run(package / "model.onnx")
    ref_nme = float(nme(ref["points"], gts, info.markup).mean())
    out = {"float": {"nme_mean": ref_nme}, "calibration_faces": len(calib), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in VARIANTS.items():
            path = Path(tmp) / "q.onnx"
            quantize(package / "model.onnx", path, calib, **options)
            got = run(path)
            diff = np.abs(got["points"] - ref["points"])
            out["variants"][name] = {
                "nme_mean": float(nme(got["points"], gts, info.markup).mean()),
                "nme_minus_float": float(nme(got["points"], gts, info.markup).mean()) - ref_nme,
                "point_px_diff_mean": float(diff.mean()), "point_px_diff_max": float(diff.max()),
                "pose_diff_max_deg": np.abs(got["pose"] - ref["pose"]).max(0).tolist(),
                **{f"{k}: crop px diff mean / max": [float(np.abs(got[k] - ref[k]).mean()), float(np.abs(got[k] - ref[k]).max())]
                   for k in ood},
            }
            print(name, json.dumps(out["variants"][name]))
    if args.json:
        write_json_atomic(args.json, stamp(out))


if __name__ == "__main__":
    main()
