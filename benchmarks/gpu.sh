#!/usr/bin/env bash
# The GPU run, prepared: Cos, CoInsP** (sampled, the shipped recipe's preset), MaskCon and Opt at 50 epochs on
# Fashion-MNIST with --device cuda, one Markdown + JSON table (benchmarks/training_benchmark.py writes it).
# Installs nothing beyond the pinned requirements. Settings by environment; extra arguments go to the benchmark:
#   bash benchmarks/gpu.sh                                   # on the GPU machine: reports/benchmark-gpu/
#   DEVICE=cpu EPOCHS=1 OUT=/tmp/smoke bash benchmarks/gpu.sh --limit 512 --no-throughput   # the CPU smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
EPOCHS=${EPOCHS:-50}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-reports/benchmark-gpu}
if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA device is visible to torch; run with DEVICE=cpu for a smoke run" >&2
    exit 2
fi
exec "$PYTHON" -m benchmarks.training_benchmark --device "$DEVICE" --epochs "$EPOCHS" \
    --methods cos coinsp_sampled maskcon opt --out "$OUT" "$@"
