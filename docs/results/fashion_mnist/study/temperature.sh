#!/usr/bin/env bash
# Ablation: logit temperature T = 1 and T = 200 for hutch_pruner, hutch_taylor (default 200) and
# ggn_pruner (default 1) at 0.99 and 0.998.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512); seeds outermost.
# Usage: temperature.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes.
# SEEDS=0 runs seed 0 only (default 0,42,123).
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
OUT=${1:-docs/results/fashion_mnist/study/temperature}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
# Each criterion at the temperature it does not have by default; its default (T = 200 for the Hutchinson
# criteria, T = 1 for ggn_pruner) is the main grid's run.
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "${OUT}_hutch" --grid "seed=$SEEDS" \
  criterion=hutch_pruner,hutch_taylor sparsity=0.99,0.998 --criterion-options temperature=1
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "${OUT}_ggn" --grid "seed=$SEEDS" \
  criterion=ggn_pruner sparsity=0.99,0.998 --criterion-options temperature=200
