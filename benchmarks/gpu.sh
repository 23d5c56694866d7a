#!/usr/bin/env bash
# Every GPU figure of issue 16 in one run on one CUDA GPU (at most 8 minutes once set up), written to ONE JSON:
#   bash benchmarks/gpu.sh [PATH.json]            # default: $OUT/gpu.json when $OUT is set, else runs/gpu.json
#   bash benchmarks/gpu.sh --dry-run [PATH.json]  # the same code on the CPU at 32 px, tiny sizes (tests/test_gpu_script.py)
#   bash benchmarks/gpu.sh --parts throughput,memory:finetune   # a subset (see benchmarks/gpu_bench.py)
# Python: $FEDCL_PYTHON when set (an interpreter that already has fedcl's dependencies, e.g. a GPU image's own
# python3 with the missing packages on PYTHONPATH: benchmarks/gpu_offline.sh), else the repository's .venv; on a
# fresh machine with neither, it first runs scripts/setup.sh (needs PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${FEDCL_PYTHON:-.venv/bin/python}"
if [ -z "${FEDCL_PYTHON:-}" ] && [ ! -x .venv/bin/python ]; then
  bash scripts/setup.sh
fi
export HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" benchmarks/gpu_bench.py "$@"
