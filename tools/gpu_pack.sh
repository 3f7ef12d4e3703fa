#!/usr/bin/env bash
# Make what tools/gpu_run.sh takes to a GPU machine, in .gpu/ (git-ignored; name
# it in the device tool's `carry`):
#
#   tools/gpu_pack.sh [MEGABYTES]
#
# the data pack (kboost-rt data pack, from data/cache) and the wheels of the
# Python packages a GPU machine of this project lacks (soundfile, cffi,
# pycparser, pyroomacoustics), for its Python 3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-40}
KBOOST=${KBOOST:-.venv/bin/kboost-rt}
PIP=${PIP:-.venv/bin/pip}
"$KBOOST" data pack --tasks separate,enhance --out .gpu --megabytes "$MB"
mkdir -p .gpu/wheels
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$p")
done
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .gpu/wheels soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 \
  pyroomacoustics==0.10.1
du -sh .gpu
