#!/usr/bin/env bash
# Federated vs single-device statistical heads on Split-Fashion-MNIST 5x2, class-incremental, 64 px
# (200 training / 100 test images per class), 10 clients, inline backend: docs/federated_statistics.md.
#   bash simulations/federated_statistics.sh [head] [out]     (head: ridge | lda | ncm-cosine; about 1 min per run on 2 cores)
set -euo pipefail
HEAD=${1:-ridge}; OUT=${2:-runs/federated_statistics}
PY="${PYTHON:-.venv/bin/python} -m fedcl"
case $HEAD in
  ncm-cosine) HEADSET=(--set model.head.name=ncm --set model.head.options.metric=cosine) ;;
  *) HEADSET=(--set model.head.name=$HEAD) ;;
esac
DATA=(--set data.image_size=64 --set data.max_train_per_class=200 --set data.max_test_per_class=100)
for seed in 0 1 2; do
  $PY train -q -p default -o "$OUT/$HEAD/single/s$seed" "${DATA[@]}" "${HEADSET[@]}" --set seed=$seed
  for part in iid dir0.5 dir0.1; do
    case $part in
      iid) P=(--set federation.partition=iid) ;;
      dir0.5) P=(--set federation.partition=dirichlet --set federation.dirichlet_alpha=0.5) ;;
      dir0.1) P=(--set federation.partition=dirichlet --set federation.dirichlet_alpha=0.1) ;;
    esac
    $PY simulate -q -p federated -o "$OUT/$HEAD/$part/s$seed" "${DATA[@]}" "${HEADSET[@]}" "${P[@]}" --set seed=$seed \
      --set federation.backend=inline --set federation.evaluate_clients=false
  done
done
