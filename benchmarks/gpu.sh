#!/usr/bin/env bash
# The GPU run, prepared: Cos, CoInsP** (sampled, the shipped recipe's preset), MaskCon and Opt at 50 epochs on
# Fashion-MNIST with --device cuda, one Markdown + JSON table (benchmarks/training_benchmark.py writes it).
# Installs nothing beyond the pinned requirements. Settings by environment; extra arguments go to the benchmark:
#   bash benchmarks/gpu.sh                                   # on the GPU machine: reports/benchmark-gpu/
#   DEVICE=cpu EPOCHS=1 OUT=/tmp/smoke bash benchmarks/gpu.sh --limit 512 --no-throughput   # the CPU smoke run
# METHODS takes any of the benchmark's methods, the ImageNet rows (requirements-pretrained.txt) included:
#   METHODS="cos coinsp_sampled maskcon opt coinsp_imagenet" bash benchmarks/gpu.sh
# They are not in the default list (estimated, not yet measured on a GPU): the four smallcnn methods take about
# 2 minutes each at 50 epochs (11,700 steps of 256 images at 28 px, launch-bound, plus Recall@k every epoch);
# coinsp_imagenet, EfficientNet-Lite0 at 112 px, about 9-13 minutes more (11,700 steps at 25-40 ms, plus
# decoding 70,000 images at 112 px on one CPU core), which would double the run and not fit a 10-minute slot.
# imagenet_frozen trains nothing, so its row is the same on any device: the CPU benchmark measures it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
EPOCHS=${EPOCHS:-50}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-reports/benchmark-gpu}
METHODS=${METHODS:-cos coinsp_sampled maskcon opt}
if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA device is visible to torch; run with DEVICE=cpu for a smoke run" >&2
    exit 2
fi
read -r -a METHOD_LIST <<< "$METHODS"  # one word per method
exec "$PYTHON" -m benchmarks.training_benchmark --device "$DEVICE" --epochs "$EPOCHS" \
    --methods "${METHOD_LIST[@]}" --out "$OUT" "$@"
