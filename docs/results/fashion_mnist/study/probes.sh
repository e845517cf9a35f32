#!/usr/bin/env bash
# Ablation: Hutchinson probes per sample, 1, 3, 10 (the default) and 30, for hutch_pruner at 0.99. The
# Jaccard overlaps of the kept sets (with ggn_pruner's of the main grid, and between seeds) come from mask.pt.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512); seeds outermost.
# Usage: probes.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes.
# SEEDS=0 runs seed 0 only (default 0,42,123).
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
OUT=${1:-docs/results/fashion_mnist/study/probes}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "$OUT" --grid "seed=$SEEDS" \
  'criterion_options=[{probes: 1}, {probes: 3}, {probes: 10}, {probes: 30}]' criterion=hutch_pruner \
  sparsity=0.99
