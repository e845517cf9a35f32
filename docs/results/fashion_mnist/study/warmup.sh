#!/usr/bin/env bash
# Ablation: BatchNorm warmup before scoring - none, 20 batches (the main grid's), one full pass over the
# training set (warmup_batches null, the paper's) - for the data-dependent criteria at 0.99 and 0.998;
# the 20-batch runs are the main grid's.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512); seeds outermost.
# Usage: warmup.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes.
# SEEDS=0 runs seed 0 only (default 0,42,123).
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
OUT=${1:-docs/results/fashion_mnist/study/warmup}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
# Warmup 20 is the main grid's (main_grid.sh), not run again here.
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "$OUT" --grid "seed=$SEEDS" \
  warmup_batches=0,null criterion=snip,grasp,fisher_pruner,hutch_pruner,ggn_pruner sparsity=0.99,0.998
