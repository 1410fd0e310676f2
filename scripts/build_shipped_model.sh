#!/usr/bin/env bash
# Build a shipped model package from a finished training run, every step in order (scripts/README.md):
#
#   scripts/build_shipped_model.sh RUN NAME [build_model.py options, e.g. --int8 --history-package DIR]
#
# RUN is the run folder (best.pt, split.json, metrics.jsonl, model_card.json); the package is
# written to src/asmnet/models/NAME (and NAME-fp32 with --int8). DATA (default: the two shipped
# training sets under ../shared/data) names the annotated folders, space-separated; DETECTOR
# (default dlib-hog) is the detector the quality score is fitted and measured with. Reports of
# steps 2 and 3 go to RUN/package/. It takes hours on a CPU: run it with nice.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
RUN=$1 NAME=$2
shift 2
DATA=${DATA:-"../shared/data/lfpw_train ../shared/data/udacity_train"}
DETECTOR=${DETECTOR:-dlib-hog}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=src/asmnet/models/$NAME
REPORTS=$RUN/package
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}

data_args=()
for folder in $DATA; do data_args+=(--data "$folder"); done
mkdir -p "$REPORTS"

echo "1/4 export, validate and measure: $OUT" >&2
"$PYTHON" scripts/build_model.py --checkpoint "$RUN/best.pt" --run-dir "$RUN" "${data_args[@]}" \
    --out "$OUT" --name "$NAME" "$@"

also=()
[ -d "$OUT-fp32" ] && also=(--also "$OUT-fp32")
echo "2/4 error head and learned quality score (training faces)" >&2
"$PYTHON" scripts/fit_quality.py "${data_args[@]}" --model "$OUT" "${also[@]}" --detector "$DETECTOR" \
    --report "$REPORTS/quality_fit.json" --write

echo "3/4 quality thresholds (validation faces)" >&2
"$PYTHON" benchmarks/second_look.py "${data_args[@]}" --keys "$OUT/val_keys.txt" --model "$OUT" \
    --detector "$DETECTOR" --out "$REPORTS/second_look.json" --quality-out "$REPORTS/quality.json" \
    --write-thresholds
if [ -d "$OUT-fp32" ]; then  # the float package: the settings its thresholds need only
    "$PYTHON" benchmarks/second_look.py "${data_args[@]}" --keys "$OUT/val_keys.txt" --model "$OUT-fp32" \
        --detector "$DETECTOR" --angles 0 --detector-angles 0 --nonface-boxes 56 \
        --settings one_pass,one_pass_flip,refine1_straight,refine2_straight,refine2_early \
        --out "$REPORTS/second_look_fp32.json" --quality-out "$REPORTS/quality_fp32.json" --write-thresholds
fi

echo "4/4 MODEL_CARD.md from the finished card" >&2
"$PYTHON" scripts/build_model.py --card-only "$OUT"
echo "built $OUT; check it: pytest tests/test_models.py tests/test_int8_models.py" >&2
