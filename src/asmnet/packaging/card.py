"""MODEL_CARD.md: the Markdown page of a shipped package, rendered from model.json's ``card``.

The card itself (training record, validation, quality, speed) is measured and written by
``scripts/build_model.py``; ``scripts/fit_quality.py`` and ``benchmarks/second_look.py
--write-thresholds`` add to it. :func:`render_card` turns it into the page.
"""

# ruff: noqa: E501  (the Markdown template's long lines are the page's lines, kept whole to read)

from __future__ import annotations


def peers_and_ablation(card: dict) -> str:
    """Markdown for the peer baselines and the ASM-LOSS ablation, when the card has them."""
    parts = []
    for name, protocols in (card.get("baselines") or {}).items():
        rows = "\n".join(f"| {proto} | {folder} | {r['n']} | {r.get('miss_rate', 0):.1f} | {r['nme_mean']:.2f} | {r['fr_0.10']:.2f} |"
                         for proto, folders in protocols.items() for folder, r in folders.items())
        parts.append(f"## Peer on the same validation faces: {name}\n| protocol | part | faces | miss % | NME mean % | FR@10 % |\n"
                     f"|---|---|---|---|---|---|\n{rows}\n")
    ab = card.get("ablation")
    if ab:
        rows = "\n".join(f"| {a} / {b} | {ab['runs'][a]['point_loss']}, {ab['runs'][a]['input_size']} px, "
                         f"{ab['runs'][a]['epochs_done']} ep | {ab['runs'][a]['best_val_nme']:.3f} | {ab['runs'][b]['best_val_nme']:.3f} |"
                         for a, b in ab["pairs"])
        parts.append(f"## ASM-LOSS against the plain loss ({ab['what']})\n| runs | setting | ASM-LOSS NME % | plain NME % |\n"
                     f"|---|---|---|---|\n{rows}\n")
    return "\n".join(parts)


def with_detector_text(quality: dict) -> str:
    """The card's line on the quality flag over ground-truth and detector boxes together, if measured."""
    w = quality.get("with_detector")
    if not w:
        return ""
    return (f"With {w['boxes']} boxes ({w['n']} results; benchmarks/second_look.py): ROC AUC "
            f"{w['roc_auc']:.3f}, {w['flag_share']:.1%} flagged, failures caught {w['failures_caught']}.\n")


def error_head_text(card: dict) -> str:
    """Markdown lines on the graph's error head, when the card has one (scripts/fit_quality.py)."""
    head = card.get("error_head")
    if not head:
        return ""
    fit = head["train_clean_out_of_fold"].get("learned2", {})
    return (f"Error head: one linear layer on the pooled features ({head['weights']} weights + bias, "
            f"{head['multiply_adds_per_crop']} multiply-adds per crop), graph output `error` ({head['output']}); "
            f"landmarks and pose are bit-identical to the graph without it. Fitted by {head['fitted']['by']} on "
            f"{head['fitted']['faces']}; {head['fitted']['error_head']}; {head['fitted']['terms']}. "
            f"Training faces, out of fold (ground-truth and detector boxes): ROC AUC {fit.get('roc_auc')}, "
            f"{fit.get('failures_caught_at_5pct')} of {fit.get('failures')} failures caught at 5 % flagged.\n")


def augment_text(augment: dict | None) -> str:
    """The card's line on the training augmentation (AugmentConfig fields), empty if not recorded."""
    if not augment:
        return ""
    a = augment
    return (f"- Augmentation: crop scale ±{a['scale']:.0%}, shift ±{a['shift']:.0%} of the crop side, rotation "
            f"±{a['rotation']:g}° on {a['rotation_prob']:.0%} of crops; flip {a['flip_prob']:.0%}, colour "
            f"{a['color_prob']:.0%}, blur {a['blur_prob']:.0%}, grey {a['gray_prob']:.0%}, low resolution "
            f"{a['lowres_prob']:.0%}, occlusion {a['occlusion_prob']:.0%}.\n")


def refiner_text(card: dict) -> str:
    """The section on a package's own refiner (``card["refiner"]``: each stage's validation summary
    from ``asmnet refiner``), or "" without one."""
    stages = card.get("refiner") or []
    if not stages:
        return ""
    network = card.get("validation_network", {})
    kinds = ", ".join(f"{k} (from {v:g} px between the eyes)" for st in stages for k, v in st["kinds"].items()) or "none"
    shape = any((st.get("shape_regression") or {}).get("chosen") for st in stages)
    first, last = stages[0], stages[-1]
    rows = "\n".join(f"| {part} | {first['before'][part]:.3f} | {last['after'][part]:.3f} |" for part in first["before"])
    return f"""## Refiner (`refiner/`: used unless `refine_regions=False` / `--no-refine-regions`)
Part networks: {kinds}. Shape regression: {"yes" if shape else "no"} (a ridge correction of every
point from the whole predicted shape and the face's size, fitted on the training faces;
`asmnet.shape_regression`). The validation above includes it; the network alone gives NME mean
{network.get('nme_mean', float('nan')):.2f} % there. As users run it ({first['detector']} + second look, {first['faces']} faces, NME %):

| faces | network | with the refiner |
|---|---|---|
{rows}

"""


def group_text(pattern: str) -> str:
    """What a split's group pattern keeps together (the two patterns of asmnet.training.split)."""
    if "|" in pattern:  # ALL_DATA_PATTERN: clips, and the faces of one HELEN / AFW photo
        return "Udacity frames of one clip, and the faces of one HELEN or AFW photo, stay together"
    return "Udacity frames of one clip stay together"


def render_card(card: dict) -> str:
    """MODEL_CARD.md's text for a package's model.json ``card``; KeyError when the card lacks a
    field a package built by scripts/build_model.py has."""
    v, t = card["validation"], card["training"]
    # cards written before variance_share was recorded have the asked share in the config only
    share = card["shape_model"].get("variance_share", t["config"].get("variance"))
    asked = f", asked {share:.0%}" if share is not None else ""
    stages = t.get("earlier_stages", [])
    earlier = "".join(
        f"- Earlier stage {i} of {len(stages)} (this run started from the last one): {e['epochs_done']} epochs ({e['wall_time_s']:.0f} s on {e['device']}, "
        f"torch {e['torch']}), loss `{e['config']['loss']}` / `{e['config']['point_loss']}`, "
        f"{e['config']['input_size']} px, lr {e['config']['lr']}, batch {e['config']['batch_size']}, "
        f"planned {e['config']['epochs']} epochs; its best validation NME {e['best']['val_nme']:.3f} %.\n"
        for i, e in enumerate(stages, 1))
    extras = [f"EMA of the weights {t['config']['ema']}"] if t["config"].get("ema") else []
    extras += [f"training faces of `{f}` drawn {n}x per epoch" for f, n in (t["config"].get("oversample") or {}).items()]
    rows = "\n".join(f"| {f} | {d['n']} | {d['nme_mean']:.2f} | {d['nme_median']:.2f} |" for f, d in v["per_folder"].items())
    stages = card["speed"]["landmark_stage"]
    cpu = any("cpu_ms_per_face_median" in s for s in stages)  # cards timed before CPU time was recorded lack it
    speed = "\n".join(f"| {s['threads']} | {s['batch']} | {s['ms_per_face_median']:.2f} | {s['ms_per_face_p90']:.2f} |"
                      + ((f" {s['cpu_ms_per_face_median']:.2f} |" if "cpu_ms_per_face_median" in s else " |") if cpu else "")
                      for s in stages)
    speed_head = ("| threads | batch | ms/face median | p90 |" + (" CPU ms/face (1 thread) |" if cpu else "")
                  + "\n|---|---|---|---|" + ("---|" if cpu else ""))
    loads = [s["load_average"] for s in card["speed"]["landmark_stage"] if "load_average" in s]
    load = f", load average {max(loads):.1f} while measuring" if loads else ""
    note = f"; {card['speed']['note']}" if card["speed"].get("note") else ""
    pose = v["pose_mae"] or {}
    q = card["quality"]
    net = card.get("validation_network", v)  # the blend acts on the network's points, before any refiner
    blends = "\n".join(f"| {b} | {d['nme_mean']:.3f} | {d['fr_0.10']:.2f} |" for b, d in card["asm_blend"].items())
    return f"""# Model card: {card['name']}

ASMNet ({card['architecture']}, {card['parameters']:,} parameters), {card['input_size']}x{card['input_size']} input,
68 points (iBUG) + head pose (yaw, pitch, roll; 300W-LP convention).

## Training
- Data: {', '.join(t['data'])}; pose labels: {t['pose_labels']}.
- Split: {t['split']['n_train']} training / {t['split']['n_val']} validation faces, by group
  (`{t['split']['group_pattern']}`: {group_text(t['split']['group_pattern'])}), split seed {t['split']['split_seed']}.
- Config: loss `{t['config']['loss']}` (point distance `{t['config']['point_loss']}`), shape model
  {card['shape_model']['components']} components ({card['shape_model']['explained']:.1%} of variance{asked}),
  AdamW lr {t['config']['lr']}, batch {t['config']['batch_size']}, planned {t['config']['epochs']} epochs,
  seed {t['config']['seed']}{''.join('; ' + x for x in extras)}.
{augment_text(t['config'].get('augment'))}- Ran {t['epochs_done']} epochs ({t['wall_time_s']:.0f} s on {t['device']}, torch {t['torch']}); best
  validation epoch {t['best_epoch']} (selected on validation NME); commit {t['git_commit']}.
{earlier}
## Validation (ground-truth box protocol, inter-ocular NME)
All {v['n']} faces: NME mean {v['nme_mean']:.2f} %, median {v['nme_median']:.2f} %, FR@8 % {v['fr_0.08']:.2f} %,
FR@10 % {v['fr_0.10']:.2f} %, AUC@0.08 {v['auc_0.08']:.4f}, AUC@0.10 {v['auc_0.10']:.4f}.
Pose MAE against the teacher labels: yaw {pose.get('yaw', float('nan')):.2f}°, pitch {pose.get('pitch', float('nan')):.2f}°, roll {pose.get('roll', float('nan')):.2f}°.

| part | faces | NME mean % | NME median % |
|---|---|---|---|
{rows}

## Quality score as a failure flag
{q.get('definition', '')}.
ROC AUC for NME > 8 %: {q['roc_auc_nme_gt_8']:.3f}; threshold {q['threshold']:.5f} flags {q['flag_share']:.1%} of faces;
FR@8 % among flagged {q['fr_0.08_among_flagged']:.1f} %, among the rest {q['fr_0.08_among_unflagged']:.2f} %; failures caught {q['failures_caught']}.
{with_detector_text(q)}
{error_head_text(card)}
{refiner_text(card)}
## ASM blend at inference (the network's prediction moved towards its ASM projection)
| blend | NME mean % | FR@10 % |
|---|---|---|
| 0 | {net['nme_mean']:.3f} | {net['fr_0.10']:.2f} |
{blends}

{peers_and_ablation(card)}
## Speed (landmark + pose stage, ONNX Runtime, {card['speed']['cpu']}{load}{note})
{speed_head}
{speed}
"""

