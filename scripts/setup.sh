#!/usr/bin/env bash
# Create .venv and install ramnet-fla with its test, demo (mqar), language-modelling (lm) and lm-eval (eval) extras.
# torch is pinned to 2.13.0 first: on a CPU-only machine pip takes the CPU build, on a GPU machine
# PyPI's CUDA build; an environment that already has torch >= 2.5 keeps its own.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e ".[test,mqar,lm,eval]"
