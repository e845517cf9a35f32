#!/usr/bin/env bash
# Ablation: a second architecture, ResNet-20 (BatchNorm, projection shortcuts) at width 0.5: 8/16/32
# channels, 68k weights (0.998 keeps 135), a training step about twice the VGG testbed's on this CPU (width
# 1.0 is five times, width 0.25 leaves 35 weights at 0.998). VGG settings otherwise; then a dense run
# per seed.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512); seeds outermost.
# Usage: resnet20.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes.
# SEEDS=0 runs seed 0 only (default 0,42,123).
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
OUT=${1:-docs/results/fashion_mnist/study/resnet20}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
initprune sweep "${COMMON[@]}" --model resnet20 --model-options width=0.5 "${EXTRA[@]}" --out "$OUT" \
  --grid "seed=$SEEDS" criterion=random,magnitude,snip,synflow,fisher_pruner,hutch_pruner,ggn_pruner \
  sparsity=0.9,0.99,0.998
initprune sweep "${COMMON[@]}" --model resnet20 --model-options width=0.5 "${EXTRA[@]}" --out "${OUT}_dense" \
  --grid "seed=$SEEDS" criterion=random sparsity=0.0
