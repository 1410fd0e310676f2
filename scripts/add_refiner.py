"""A model package that is another package's landmark network plus a region refiner.

The new package (``--out``) holds the base package's ONNX graph, its ``model.json`` renamed (through
``asmnet.package``, so it is checked like every package), the refiner folder of an ``asmnet refiner``
run, and a model card. Its card's ``validation`` is measured here as ``asmnet models`` shows every
model's: the base's validation faces (``--keys``), ground-truth boxes, one pass, then the refiner;
``validation.json`` holds the whole evaluation. Loading the package uses the refiner (it has one):

    python scripts/add_refiner.py --base default --refiner runs/refiner3/refiner --name accurate \\
        --data ../shared/data/lfpw_train --data ../shared/data/udacity_train \\
        --keys src/asmnet/models/default/val_keys.txt --out src/asmnet/models/accurate
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from asmnet.evaluation import evaluate, read_keys
from asmnet.fileio import read_small_json, write_json_atomic, write_text_atomic
from asmnet.formats import load_many
from asmnet.package import read_model_document, write_model_json
from asmnet.packaging.card import render_card
from asmnet.regions import RegionRefiner
from asmnet.runtime import load_model, resolve_model

VALIDATION_KEYS = ("n", "nme_mean", "nme_median", "fr_0.08", "fr_0.10", "auc_0.08", "auc_0.10", "pose_mae", "per_folder")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def card_text(name: str, base: str, validation: dict, stages: list[dict], cfg: dict, base_validation: dict) -> str:
    """MODEL_CARD.md of the new package (``stages``: each refiner stage's validation summary, in order;
    ``cfg``: the first stage's training config)."""
    first, last = stages[0], stages[-1]
    labels = [" + ".join(x for x in ("part networks" if st["kinds"] else "", "shape regression"
                                     if (st.get("shape_regression") or {}).get("chosen") else "") if x) for st in stages]
    head = "| faces | network | " + " | ".join(f"stage {i}: {label}" for i, label in enumerate(labels, 1)) + " |"
    rows = "\n".join(f"| {part} | {first['before'][part]:.3f} | " + " | ".join(f"{st['after'][part]:.3f}" for st in stages)
                     + " |" for part in first["before"])
    shape = next(((st.get("shape_regression") or {}).get("chosen") for st in stages
                  if (st.get("shape_regression") or {}).get("chosen")), None)
    shape_text = (f"Then a **shape regression** corrects every point from the whole refined shape: a ridge "
                  f"regression (one per face-size group, split at {shape['groups'] or 'no'} px between the eyes) "
                  "of each point's offset, in the frame that maps the points onto the mean face, on those framed "
                  "points and the face's size; fitted on the training faces' refined points "
                  "(`asmnet.shape_regression`)." if shape else "No shape regression.")
    regions = "\n".join(f"| {r} | {first['regions_before'][r]:.3f} | {last['regions_after'][r]:.3f} |"
                        for r in first["regions_before"])
    kinds = ", ".join(f"{k} from {v:g} px" for st in stages for k, v in st["kinds"].items())
    earlier = first.get("earlier_base")  # stage 1 trained on another network's points, measured on this one
    earlier_text = (f"\n- Stage 1 was trained, and its kinds' smallest faces chosen, on the points of an earlier "
                    f"`{earlier['base']}` network "
                    f"(there: network {earlier['before']['all']:.3f} -> {earlier['after']['all']:.3f} % on all faces"
                    + (f", {earlier['before']['photos']:.3f} -> {earlier['after']['photos']:.3f} % on the photos"
                       if "photos" in earlier["before"] else "")
                    + "); the table below measures it on this package's network." if earlier else "")
    members = first.get("ensemble_with") or []
    ensemble_text = (f"\n- Ensemble: the graph of each of {', '.join(members[0]['kinds'])} is the mean of this run's network and "
                     + ", ".join(f"the width-{m['width']} network of the run `{Path(m['run']).name}` (seed {m['seed']}, "
                                 f"{m['epochs']} epochs, trained on the points `{m['base']}` gave when that run was made)" for m in members)
                     + " (`asmnet refiner --ensemble-with`)." if members else "")
    folders = "\n".join(f"| {f} | {v['n']} | {base_validation['per_folder'][f]['nme_mean']:.3f} | {v['nme_mean']:.3f} |"
                        for f, v in validation["per_folder"].items())
    return f"""# Model card: {name}

The `{base}` landmark network (its card: `../{base}/MODEL_CARD.md`; the same ONNX graph, pose head,
error head and quality thresholds) followed by a **region refiner**: one small network per face-part
kind looks at each part again, cut from the image at its own resolution around the network's
points (used on faces whose outer eye corners are at least this far apart: {kinds}). Parts of
smaller faces keep the network's points. {shape_text}

## Refiner training
- Data: {', '.join(Path(d).name for d in cfg['data'])}; the split of `asmnet train` (fraction
  {cfg['val_fraction']}, group pattern `{cfg['group_pattern']}`, split seed {cfg['split_seed']}):
  HELEN and AFW faces of one photo and Udacity frames of one clip stay on one side.
- Starts: the `{cfg['base']}` model's points from ground-truth boxes moved and resized like a
  detector's; each part's frame moved again (shift {cfg['jitter_shift']} of the eye distance, scale
  {cfg['jitter_scale']}, rotation {cfg['jitter_rotation']} degrees, standard deviations).{earlier_text}
- Config: {cfg['epochs']} epochs per kind, two patches per face and epoch, batch {cfg['batch_size']},
  AdamW one-cycle at {cfg['lr']}, width {cfg['width']}, seed {cfg['seed']}; L1 on the part's points
  in its patch. Trained with `asmnet refiner` (commit {commit()[:12]} built this package).{ensemble_text}

## Validation as users run it ({first['detector']} box + the default second look, then the refiner; {first['faces']} faces, inter-ocular NME %)
The smallest face of each kind (and which kinds are used at all) and the shape regression's size
groups and ridge strength were chosen on these faces.

{head}
|{'---|' * (len(stages) + 2)}
{rows}

Mean point error by part (pixels):

| part | before | after |
|---|---|---|
{regions}

## Validation (ground-truth box protocol, the models table's: {validation['n']} faces, one pass)
All faces: NME mean {validation['nme_mean']:.2f} % (`{base}`: {base_validation['nme_mean']:.2f} %), FR@10 % {validation['fr_0.10']:.2f}.

| part | faces | `{base}` NME % | `{name}` NME % |
|---|---|---|---|
{folders}
"""


def stage_summaries(folder: Path) -> list[dict]:
    """The validation summary of each stage of a refiner, in order (a stage's "before" is the
    points the stages before it gave, its "after" what it gives)."""
    out = [read_small_json(folder / "refiner.json")["validation"]]
    while (folder / "next" / "refiner.json").is_file():
        folder = folder / "next"
        out.append(read_small_json(folder / "refiner.json")["validation"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the landmark model package (a shipped name or a folder)")
    p.add_argument("--refiner", required=True, metavar="DIR", help="an asmnet refiner run's refiner/ folder")
    p.add_argument("--name", required=True)
    p.add_argument("--data", action="append", required=True, metavar="DIR", help="the validation faces' folders")
    p.add_argument("--keys", required=True, help="the validation keys of the models table")
    p.add_argument("--out", required=True, metavar="DIR")
    args = p.parse_args(argv)

    base, out = resolve_model(args.base), Path(args.out)
    in_place = out.resolve() == base.resolve()  # the refiner added to the base package itself
    out.mkdir(parents=True, exist_ok=True)
    if not in_place:
        shutil.copyfile(base / "model.onnx", out / "model.onnx")
        # the faces neither the network nor the refiner trained on: the base's held-out split
        shutil.copyfile(base / "val_keys.txt" if (base / "val_keys.txt").is_file() else Path(args.keys),
                        out / "val_keys.txt")
    if (out / "refiner").exists():
        shutil.rmtree(out / "refiner")
    shutil.copytree(args.refiner, out / "refiner")
    refiner = RegionRefiner(out / "refiner")  # checks what was copied
    keys = read_keys(args.keys)
    records = [r for r in load_many(args.data)[0] if r.key in keys]
    model = load_model(base, threads=1)
    before = evaluate(model, records, progress=False).to_dict()
    after = evaluate(model, records, progress=False, refiner=refiner).to_dict()
    document = read_model_document(base / "model.json")
    document["name"] = args.name
    cfg = read_small_json(out / "refiner" / "refiner.json")["config"]
    stages = stage_summaries(out / "refiner")
    if in_place:  # the package's own card, with the refiner's section and the network's own figures kept
        document["card"] = {**document["card"], "validation": {k: after[k] for k in VALIDATION_KEYS},
                            "validation_network": {k: before[k] for k in VALIDATION_KEYS}, "refiner": stages}
    else:
        document["card"] = {**document.get("card", {}), "name": args.name,
                            "validation": {k: after[k] for k in VALIDATION_KEYS}, "refiner": stages, "base": base.name}
    write_model_json(out / "model.json", document)
    # each face's NME and quality (its 68 points would make the file 30 times larger)
    after["per_image"] = [{k: v for k, v in item.items() if k != "landmarks"} for item in after["per_image"]]
    write_json_atomic(out / "validation.json", after)
    write_text_atomic(out / "MODEL_CARD.md", render_card(document["card"]) if in_place else
                      card_text(args.name, base.name, after, stages, cfg, before))
    print(f"{out}: GT box NME {before['nme_mean']:.3f} -> {after['nme_mean']:.3f} % on {after['n']} faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
