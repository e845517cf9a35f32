#!/usr/bin/env bash
# Converged training on ResNet-20 (width 0.5 as in resnet20.sh): HP, SynFlow and SNIP at 0.99, 15 epochs
# with the learning-rate warmup of converged.sh (1 epoch, linear), seeds 0, 42, 123; and a dense run.
# Base settings of main_grid.sh unless said: BatchNorm warmup of 20 batches, global scope, 100 scoring
# samples, SGD (lr 0.03, cosine, batch 512).
# Usage: converged_resnet20.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes.
# --channels-last true: the same network in the channels_last memory layout, which trains VGG-11 (width
# 0.25) 1.40x and ResNet-20 1.24x as fast on this CPU (benchmarks/training.py, part 3, 1 thread); the
# trained weights agree with the default layout's to rounding (tests/test_train.py).
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
OUT=${1:-docs/results/fashion_mnist/study/converged_resnet20}
EXTRA=("${@:2}")
COMMON=(--quiet --model resnet20 --model-options width=0.5 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 15 --warmup-epochs 1 --lr 0.03 --schedule cosine
        --batch-size 512 --channels-last true)
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "$OUT" --grid "seed=$SEEDS" \
  criterion=hutch_pruner,synflow,snip sparsity=0.99
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "${OUT}_dense" --grid "seed=$SEEDS" criterion=random \
  sparsity=0.0
