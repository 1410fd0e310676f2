#!/usr/bin/env bash
# Train several configurations side by side on one GPU machine (device tool), then collect each
# run's best.pt (best val_nme, the GT-box protocol) and last.pt's weights (compare val_nme_recrop in
# metrics.jsonl: the best epoch by the protocol is not always the best for users) and a tarball of
# the reports into $OUT. Usage:
#   scripts/gpu_sweep.sh DATA_ROOT SECONDS "name1 args..." "name2 args..." ...
# Each run: asmnet train --data DATA_ROOT/lfpw_train --data DATA_ROOT/udacity_train <args>.
set -u
data=$1; limit=$2; shift 2
runs=${RUNS:-/tmp/runs}
mkdir -p "$runs"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
pids=()
for spec in "$@"; do
  name=${spec%% *}; args=${spec#* }
  timeout "$limit" python3 -m asmnet train --data "$data/lfpw_train" --data "$data/udacity_train" \
    --group-pattern '^(?:testcsv_)?([A-Za-z][A-Za-z_.'"'"'-]*_\d)\d$' --out "$runs/$name" $args \
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
