#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md, in one run on one card (NVIDIA H100 or H200).
# Usage: bash benchmarks/gpu_suite.sh [OUT_DIR]   — needs the project installed (pip install -e .) and a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${1:-benchmarks/gpu_results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
# Each line is bounded (LINE_TIMEOUT seconds, default 300): a hung line stops the suite (set -e) instead of the card.
LINE_TIMEOUT=${LINE_TIMEOUT:-300}
run() { echo "== $*" | tee -a "$OUT/all.txt"; timeout "$LINE_TIMEOUT" $PY "$@" 2>&1 | tee -a "$OUT/all.txt"; }
# ResNet-50, P=96, T=5, batch 256: env vs bare encoder+classifier vs the original per-sample-crop loop.
run benchmarks/env_throughput.py --model resnet50 --patch-size 96 --T 5 --batch 256 --device cuda --precision fp32 --seconds 5
run benchmarks/env_throughput.py --model resnet50 --patch-size 96 --T 5 --batch 256 --device cuda --precision bf16 --channels-last --seconds 5
run benchmarks/env_throughput.py --model mobilenetv3_large_100 --patch-size 96 --T 3 --batch 256 --device cuda --precision fp32 --seconds 5
run benchmarks/env_throughput.py --model mobilenetv3_large_100 --patch-size 96 --T 3 --batch 256 --device cuda --precision bf16 --channels-last --seconds 5
run benchmarks/cache_speedup.py --model resnet50 --patch-size 96 --batch 256 --device cuda --images 512
run benchmarks/bf16_agreement.py --device cuda
# Whole episodes (load + glance + T-1 focus steps + observations to host), ResNet-50 P=96 T=5 batch 256:
# JPEGs with PIL (jpeg), the prepared cache, in memory, bare networks (lines ratio_cache=, ratio_jpeg=); then,
# in a separate process, torchvision's decoder per item on the host (jpeg-tv) and device JPEG decoding
# (jpeg-dev: jpeg_decoder='torchvision', nvJPEG batch + resize/crop/normalise on the GPU), each over in memory.
run benchmarks/episode_throughput.py --model resnet50 --patch-size 96 --T 5 --batch 256 --device cuda --precision fp32 --images 1024 --rounds 5
run benchmarks/episode_throughput.py --model resnet50 --patch-size 96 --T 5 --batch 256 --device cuda --precision bf16 --channels-last --images 1024 --rounds 5
run benchmarks/episode_throughput.py --model resnet50 --patch-size 96 --T 5 --batch 256 --device cuda --precision fp32 --images 1024 --rounds 5 --decoders torchvision
run benchmarks/episode_throughput.py --model resnet50 --patch-size 96 --T 5 --batch 256 --device cuda --precision bf16 --channels-last --images 1024 --rounds 5 --decoders torchvision
# The faces of one core on the GPU (embedded task, 256 envs): TorchRL env (device tensors end to end), TorchRL's
# GymWrapper over the vector env, the Gymnasium vector env (numpy / tensor_obs), the SB3 adapter (lines ratio_torchrl_*=).
run benchmarks/env_speed_torchrl.py --device cuda --num-envs 256 --steps 200
run benchmarks/env_speed_torchrl.py --device cuda --num-envs 1024 --steps 100
