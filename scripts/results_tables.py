"""Markdown tables from benchmarks/second_look.py results, for the READMEs after a re-measure.

    python scripts/results_tables.py benchmarks/results/second_look.json benchmarks/results/quality.json

Prints the second-look table (NME % per box, rotation and setting; miss %; network passes of the
default) for every results file given, and the quality table for every quality file given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("one_pass", "refine1", "refine1_straight", "refine2", "refine2_straight", "refine2_early")
KIND_LABELS = {
    "shape": "ASM distance (one pass) `shape`",
    "flip": "flip gap (one pass, flip TTA) `flip`",
    "refine1": "pass move, +1 pass straightened `refine1`",
    "refine2": "pass move, +2 passes straightened `refine2`",
    "learned0": "estimated NME, one pass `learned0`",
    "learned1": "estimated NME, +1 pass straightened `learned1`",
    "learned2": "estimated NME, default second look `learned2` (default)",
}


def second_look_table(results: dict) -> str:
    head = ("| box | rotation | miss % | one pass | +1 pass | +1 pass, straightened | +2 passes | "
            "+2 passes, straightened | +2 straightened, early stop (default) | passes |\n" + "|---" * 10 + "|")
    rows = []
    for box, by_angle in results["protocols"].items():
        for angle, settings in by_angle.items():
            first = next(iter(settings.values()))
            # a setting not run, or a rotation where the detector found no face at all: "–"
            cells = [f"{settings[c]['nme_mean']:.2f}" if settings.get(c, {}).get("nme_mean") is not None else "–"
                     for c in COLUMNS]
            passes = settings.get("refine2_early", {}).get("mean_passes")
            rows.append(f"| {box} | {float(angle):g}° | {first['miss_rate']:.1f} | " + " | ".join(cells)
                        + (f" | {passes:.2f} |" if passes is not None else " | – |"))
    return head + "\n" + "\n".join(rows)


def percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f} %"


def quality_table(quality: dict) -> str:
    head = ("| score | threshold | ROC AUC | caught at ≤ 5 % flagged | AUC per box | turned 90° / 180° flagged | "
            "moved half a face: flagged (failed ones caught) | non-face boxes | detector turned: good results "
            "flagged |\n" + "|---" * 9 + "|")
    rows = []
    for kind, q in quality["kinds"].items():
        v, bad = q["validation"], q.get("bad_boxes", {})
        per_box = " / ".join(f"{p['roc_auc']:.3f}" for p in q.get("per_protocol", {}).values() if p.get("roc_auc"))
        turned = " / ".join(percent(bad.get(f"turned_{a}_upright_box", {}).get("flagged")) for a in (90, 180))
        moved = bad.get("moved_half_a_face", {})
        rotated = " / ".join(f"{k.split('/')[-1]}°: {percent(r.get('flagged_among_good'))}"
                             for k, r in q.get("rotated_with_detector", {}).items())
        rows.append(f"| {KIND_LABELS.get(kind, kind)} | {q['threshold']:.2f} | {v['roc_auc']:.3f} | "
                    f"{v['failures_caught']} of {v['failures']} | {per_box} | {turned} | "
                    f"{percent(moved.get('flagged'))} ({moved.get('failures_caught')} of {moved.get('failures')}) | "
                    f"{percent(bad.get('non_face', {}).get('flagged'))} | {rotated or '–'} |")
    return head + "\n" + "\n".join(rows)


def main() -> None:
    for name in sys.argv[1:]:
        data = json.loads(Path(name).read_text())
        print(f"\n{name}\n")
        print(quality_table(data) if "kinds" in data else second_look_table(data))


if __name__ == "__main__":
    main()
