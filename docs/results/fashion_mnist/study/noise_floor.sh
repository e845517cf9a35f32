#!/usr/bin/env bash
# The noise floor: how far a result moves when nothing but the training's data order, or nothing but
# Hutchinson's probes, is redrawn. HP, SNIP and SynFlow at 0.99 with one mask each (seed 0: initialization,
# scoring samples and probes) trained with 5 data orders (train_seed 0..4; train_seed 0 is the main grid's
# seed-0 run again, a check of its reproduction); HP with 5 probe draws (probe_seed 0..4) on the seed-0
# initialization and data order. An effect below these spreads is not a finding.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512).
# Usage: noise_floor.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes. About 20 runs.
set -euo pipefail
OUT=${1:-docs/results/fashion_mnist/study/noise_floor}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "$OUT/train" --grid seed=0 train_seed=0,1,2,3,4 \
  criterion=hutch_pruner,snip,synflow sparsity=0.99
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "$OUT/probe" --grid seed=0 probe_seed=0,1,2,3,4 \
  criterion=hutch_pruner sparsity=0.99
