#!/usr/bin/env bash
# Runs every performance benchmark in sequence and prints their figures (docs/performance.md quotes them).
#   bash benchmarks/run_all.sh 2>&1 | tee runs/performance.txt
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
echo "== machine: $(nproc) CPUs, $(date -u +%F)"
for size in 32 64 224; do
  batches=10; [ "$size" = 224 ] && batches=3
  echo "== throughput and efficiency vs the frozen-backbone limit, ${size} px"
  $PY benchmarks/throughput.py --device cpu --image-size "$size" --batches "$batches"
done
echo "== head-only: cached vs recomputed features"
$PY benchmarks/feature_cache.py
echo "== memory"
$PY benchmarks/memory.py
echo "== memory kept for backward, counted exactly"
PYTHONPATH=$PWD $PY benchmarks/saved_activations.py
echo "== fused clients vs one at a time"
PYTHONPATH=$PWD $PY benchmarks/fused_clients.py --threads 1
echo "== fedcl vs a plain Flower simulation of full fine-tuning"
$PY benchmarks/vs_plain_flower.py
echo "== simulation overhead and scaling"
$PY benchmarks/sim_overhead.py
echo "== what deferring torch._dynamo costs an optimizer step (with the deferral, then with torch._dynamo loaded)"
PYTHONPATH=$PWD $PY benchmarks/step_overhead.py
PYTHONPATH=$PWD $PY benchmarks/step_overhead.py --loaded
