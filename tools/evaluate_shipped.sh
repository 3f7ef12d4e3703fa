#!/usr/bin/env bash
# Evaluate the shipped models as docs/results.md reports them: both tasks, on
# the val split (unseen training-side speakers) and the reserved test split,
# the any-delay boosted model at hint ages 1, 3 and 6 chunks, 0/10/30/100 %
# hint loss, the hint encodings, and every hint lost with the small-model
# fallback of `process` and `live`.
# Usage: tools/evaluate_shipped.sh [CACHE] [OUT] [TASKS]
#   (defaults: data/cache docs/results "separate enhance"; one task per call
#   lets two calls share a machine's cores)
set -euo pipefail
CACHE=${1:-data/cache}
OUT=${2:-docs/results}
TASKS=${3:-separate enhance}
mkdir -p "$OUT"
for task in $TASKS; do
  for split in val test; do
    set_dir="data/eval/$task-$split"
    [ -d "$set_dir" ] || kboost-rt data write-set --cache "$CACHE" --task "$task" \
      --split "$split" --out "$set_dir" --count 200 --seconds 4 --seed 0
    kboost-rt eval --task "$task" --data "$set_dir" --delays 1,3,6 \
      --hint-loss 0,0.1,0.3,1 --json "$OUT/$task-$split.json"
    kboost-rt eval --task "$task" --data "$set_dir" --delays 1,3,6 \
      --hint-loss 1 --fallback-after 25 --json "$OUT/$task-$split-fallback.json"
  done
  kboost-rt eval --task "$task" --data "data/eval/$task-val" --delays 1,3 \
    --hint-encodings float32,float16,int8,pca --json "$OUT/$task-val-encodings.json"
done
