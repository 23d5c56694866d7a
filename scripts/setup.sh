#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with fedcl, all its extras and its dev tools,
# plus Debian's Fashion-MNIST when it is missing and apt is available.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.fedcl-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # A torch/torchvision pair that import together (plain PyPI torchvision fails beside other torch builds).
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[all,dev]"
  echo "$want" > "$stamp"
fi

fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -e "$fmnist" ] && [ -z "${FEDCL_DATA:-}" ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
      || echo "setup: could not install dataset-fashion-mnist; use data.download=true to fetch Fashion-MNIST" >&2
  else
    echo "setup: run 'sudo apt-get install dataset-fashion-mnist' (or use data.download=true)" >&2
  fi
fi
