#!/usr/bin/env bash
# One prepared GPU check (about 7 minutes on one GPU; every part has its own time limit).
# Prints the figures that bench/README.md ("bench/gpu_check.sh") records. Run from anywhere:
#   bench/gpu_check.sh                 # uses .venv/bin/python, or $PYTHON
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

run() {  # run <seconds> <title> <args...>
    local limit="$1" title="$2"
    shift 2
    echo "== $title (limit ${limit}s)"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$PYTHON" bench/gpu_check.py "$@"
    local rc=$?
    [ "$rc" -eq 0 ] || { echo "!! $title: exit $rc"; status=1; }
    echo "-- $title took $((SECONDS - started)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv,noheader || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

run 240 "training at v2: full fp32 vs LoRA bf16, per stage" train --steps 20 --warmup 3
run 120 "metering sampler overhead (stage 1, LoRA bf16)" sampler --steps 25
run 75 "NVML energy counter vs integrated power" counter --seconds 50
exit $status
