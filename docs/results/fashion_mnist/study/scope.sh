#!/usr/bin/env bash
# Ablation: pruning scope - layerwise (the same sparsity in every layer) and ERK allocation - for the
# curvature criteria at 0.99 and 0.998 (global is the main grid). Per-layer density is in every result.json.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512); seeds outermost.
# Usage: scope.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes.
# SEEDS=0 runs seed 0 only (default 0,42,123).
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
OUT=${1:-docs/results/fashion_mnist/study/scope}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "$OUT" --grid "seed=$SEEDS" \
  scope=layerwise,erk criterion=fisher_pruner,ggn_pruner,hutch_pruner sparsity=0.99,0.998
