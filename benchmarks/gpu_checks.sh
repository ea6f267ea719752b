#!/usr/bin/env bash
# The GPU checks in one short script, for a machine with one CUDA GPU and PyTorch installed:
# the GPU tests, training throughput of SphereFace-20 (batch 256, 112x96) compiled and eager, then our
# SphereFace-20 training step side by side with an independent nn.Sequential reference of the same network
# (benchmarks/bench_reference.py: batch 256/512, bf16 and fp32, eager and compiled; ratio and MFU).
# Usage: bash benchmarks/gpu_checks.sh [OUT_DIR]          (CPU smoke run of the side-by-side part:
#        python benchmarks/bench_reference.py train --device cpu --smoke)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-checks}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/device.txt"
timeout 240 python3 -m pytest tests/test_gpu.py -q -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log"
timeout 150 python3 benchmarks/bench_training.py --device cuda --compile 2>&1 | tee "$out/bench_training_compiled.log"
timeout 90 python3 benchmarks/bench_training.py --device cuda 2>&1 | tee "$out/bench_training_eager.log"
timeout 300 python3 benchmarks/bench_reference.py train --device cuda --batch 256 512 --amp bf16 fp32 \
    --modes eager compiled 2>&1 | tee "$out/bench_reference_train.log"
timeout 60 python3 benchmarks/bench_reference.py inference --device cuda 2>&1 | tee "$out/bench_reference_inference.log"
