#!/usr/bin/env bash
# Train a task's large, small and boosted models on a GPU machine within a
# wall-clock budget, from the pack that tools/gpu_pack.sh made:
#
#   tools/gpu_run.sh TASK MINUTES [--device cpu] [--init ARCHIVE] [...]
#
# Writes $OUT/TASK-models.tar (every model folder, rewritten each minute) and
# $OUT/TASK-campaign.json (learning curves). Runs from the source tree: it needs
# python3 with torch, numpy and safetensors, and nothing of ours compiled;
# soundfile and pyroomacoustics come as wheels in the pack when missing.
# `python3 -m kboost_rt.training.campaign --help` lists the options.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PACK=.gpu
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[i]}" = "--pack" ] && PACK=${args[i + 1]}
done
site=""
if ! "$PYTHON" -c "import soundfile, pyroomacoustics" 2>/dev/null; then
  if ! ls "$PACK"/wheels/*.whl >/dev/null 2>&1; then
    echo "gpu_run: soundfile or pyroomacoustics is missing and $PACK/wheels has no wheels" >&2
    exit 2
  fi
  site=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" "$PACK"/wheels/*.whl
fi
export PYTHONPATH="$PWD${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PYTHON" -m kboost_rt.training.campaign "$@"
