#!/usr/bin/env bash
# Every GPU figure of issue 16 in one run on one CUDA GPU (at most 8 minutes once set up), written to ONE JSON:
#   bash benchmarks/gpu.sh [PATH.json]            # default: $OUT/gpu.json when $OUT is set, else runs/gpu.json
#   bash benchmarks/gpu.sh --dry-run [PATH.json]  # the same code on the CPU at 32 px, tiny sizes (tests/test_gpu_script.py)
#   bash benchmarks/gpu.sh --parts throughput,memory:finetune   # a subset (see benchmarks/gpu_bench.py)
# On a fresh machine with only the repository, it first runs scripts/setup.sh (needs PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  bash scripts/setup.sh
fi
export HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python benchmarks/gpu_bench.py "$@"
