"""Summarise training run folders side by side (best and final validation NME, per data folder).

    python scripts/compare_runs.py runs/base runs/os3 --what "LFPW oversampling A/B" \
        --out benchmarks/results/oversample.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def summarise(run: Path) -> dict:
    """What a run folder's config.json and metrics.jsonl say about it."""
    cfg = json.loads((run / "config.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not history:
        raise SystemExit(f"{run}: metrics.jsonl has no epochs")
    best = min(history, key=lambda h: h["val_nme"])
    last = history[-1]

    def folders(h: dict) -> dict:
        return {k: round(v, 3) for k, v in h.get("val_nme_per_folder", {}).items()}

    out = {
        "run": run.name,
        "config": {k: cfg.get(k) for k in ("init", "head", "cell_weight", "epochs", "lr", "warmup_epochs", "ema", "loss", "point_loss",
                                            "oversample", "seed", "input_size", "batch_size",
                                            "teacher", "teacher_weight", "recrop", "augment")},
        "epochs_done": len(history),
        "wall_time_s": round(last["wall_time"]),
        "best_epoch": best["epoch"] + 1,
        "best_val_nme": round(best["val_nme"], 3),
        "best_val_nme_per_folder": folders(best),
        "best_val_fr_0.10": round(best["val_fr_0.10"], 2),
        "last_val_nme": round(last["val_nme"], 3),
        "last_val_nme_per_folder": folders(last),
    }
    for name, h in (("best", best), ("last", last)):  # epochs since 2026-12-03: crops from the network's own points
        if "val_nme_recrop" in h:
            out[f"{name}_val_nme_recrop"] = round(h["val_nme_recrop"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--what", default="", help="one line saying what the runs compare")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result = {"what": args.what, "runs": [summarise(r) for r in args.runs]}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
