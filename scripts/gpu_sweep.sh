#!/usr/bin/env bash
# Train several configurations side by side on one GPU machine (device tool), then collect each
# run's best.pt (best val_nme, the GT-box protocol) and last.pt's weights (compare val_nme_recrop in
# metrics.jsonl: the best epoch by the protocol is not always the best for users) and a tarball of
# the reports into $OUT. Usage:
#   scripts/gpu_sweep.sh DATA_ROOT SECONDS "name1 args..." "name2 args..." ...
# Each run: asmnet train --data DATA_ROOT/F for each F in $FOLDERS (default: all four 300W-layout
# folders) <args>, split with training.split.ALL_DATA_PATTERN (Udacity clips and 300W photos stay
# whole). DATA_ROOT is ../shared/data or, on a lent machine (64 MiB working tree), the compact pack
# of scripts/make_training_pack.py (carry .data/pack).
set -u
data=$1; limit=$2; shift 2
folders=${FOLDERS:-"lfpw_train helen_train afw udacity_train"}
data_args=()
for f in $folders; do data_args+=(--data "$data/$f"); done
runs=${RUNS:-/tmp/runs}
mkdir -p "$runs"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
pids=()
for spec in "$@"; do
  name=${spec%% *}; args=${spec#* }
  timeout "$limit" python3 -m asmnet train "${data_args[@]}" \
    --group-pattern '^(?:testcsv_)?([A-Za-z][A-Za-z_.'"'"'-]*_\d)\d$|^(\d+)_\d+$' --out "$runs/$name" $args \
    > "$runs/$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for spec in "$@"; do
  name=${spec%% *}
  echo "== $name"; grep -E "^(data|shape model|training|epoch [0-9]+/)" "$runs/$name.log" | tail -4
  [ -n "${OUT:-}" ] && [ -f "$runs/$name/best.pt" ] && cp "$runs/$name/best.pt" "$OUT/$name.pt"
  [ -n "${OUT:-}" ] && [ -f "$runs/$name/last.pt" ] && python3 - "$runs/$name/last.pt" "$OUT/$name.last.pt" <<'PY'
import sys
from asmnet.nn.checkpoint import load_checkpoint, save_checkpoint, without_training_state
save_checkpoint(sys.argv[2], without_training_state(load_checkpoint(sys.argv[1])))
PY
done
[ -n "${OUT:-}" ] && tar czf "$OUT/reports.tgz" -C "$runs" --exclude='*.pt' .
exit 0
