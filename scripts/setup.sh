#!/usr/bin/env bash
# Create .venv and install greenwindow with the worker extra and the test tools. Idempotent.
# (The service alone is `pip install .`: no PyTorch.)
# torch is pinned to 2.13.0 and installed first: that resolves to the CPU build (no multi-GB
# CUDA download). GPU workers install a CUDA build instead; see README "GPU workers".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[worker,dev]"
