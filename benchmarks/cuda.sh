#!/usr/bin/env bash
# The checks that need a CUDA device, in one go, each step with its own time limit:
#   1. tests/test_cuda.py (CUDA scores equal the CPU's, exact Hutchinson, held masks in bf16, resume, and
#      no host-device synchronization that grows with batches or steps),
#   2. benchmarks/scoring.py on CUDA (every criterion × one batched gradient; the batch-1 loops),
#   3. the same on the paper's networks (VGG-16, ResNet-18, ViT-Small) at 100 and 1,000 samples, with peak
#      memory and the chunks the device's memory budget gives (targets: fisher_diag ≤ 1.5 batched
#      gradients, hutch_diag ≥ 20× faster than its batch-1 loop on ResNet-18 and VGG-16 and ≤ 2× its
#      shared-probe floor, drawing the probes ≤ 10 % of it; with hutch_diag's breakdown by step),
#   4. benchmarks/training.py on CUDA (mask overhead; ResNet-18 bf16 + channels_last throughput),
#   5. the README's main job (`initprune run`) on CUDA, on Fashion-MNIST,
#   6. the whole test suite.
#
#   bash benchmarks/cuda.sh [LOG_DIR]
#   STEPS="scoring_paper" bash benchmarks/cuda.sh [LOG_DIR]     # only the named steps
#
# Each step's full output goes to LOG_DIR/<step>.log (default: cuda-logs); its tail is printed.
set -u
log_dir=${1:-cuda-logs}
mkdir -p "$log_dir"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

step() {
    local name=$1 limit=$2 start rc
    shift 2
    if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then
        return
    fi
    echo "=== $name (limit ${limit}s)"
    start=$(date +%s)
    timeout "$limit" "$@" >"$log_dir/$name.log" 2>&1
    rc=$?
    echo "=== $name: exit $rc after $(($(date +%s) - start))s"
    tail -n "${TAIL:-25}" "$log_dir/$name.log"
}

nvidia-smi -L
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
step test_cuda 150 "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py
TAIL=60 step scoring 150 "$python" benchmarks/scoring.py --device cuda --hutch-breakdown
TAIL=120 step scoring_paper 300 "$python" benchmarks/scoring.py --device cuda --quick --hutch-breakdown \
    --models vgg16 resnet18 vit_small --samples 100 1000 --loop-samples 20
TAIL=30 step training 100 "$python" benchmarks/training.py --quick --devices cuda
step main_job 100 "$python" -m initprune.cli run --device cuda --out "$(mktemp -d)/main"
step test_suite 100 "$python" -m pytest -q -p no:cacheprovider -n 8
