#!/usr/bin/env bash
# The study's main grid: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20 batches, global scope,
# 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512); 15 criteria x 5 sparsities x 3 seeds,
# seed outermost so that a whole seed lands first. Then a dense run per seed. Rerunning resumes.
# Usage: main_grid.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. SEEDS=0 runs seed 0 only.
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
OUT=${1:-docs/results/fashion_mnist/study/main}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "$OUT" --grid "seed=$SEEDS" \
  criterion=random,magnitude,grad_norm,snip,grasp,synflow,fisher_diag,fisher_pruner,fisher_taylor,hutch_diag,hutch_pruner,hutch_taylor,ggn_pruner,ggn_taylor,fisher_mc_pruner \
  sparsity=0.9,0.98,0.99,0.995,0.998
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "${OUT}_dense" --grid "seed=$SEEDS" criterion=random \
  sparsity=0.0
