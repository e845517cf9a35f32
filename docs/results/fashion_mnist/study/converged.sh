#!/usr/bin/env bash
# Converged training: 15 epochs with the same learning-rate warmup for every run (1 epoch, linear; the
# 15-epoch random run diverged at lr 0.03 without one). random, magnitude, SNIP, SynFlow, HD, HP, FP and
# exact OBD (ggn_pruner) at 0.99, 0.995 and 0.998, and a dense run with the same recipe; seeds outermost.
# Then (run_all.sh) seeds 7 and 99 at 0.99, and later (converged_resnet20.sh) ResNet-20; seeds 7, 99:
# SEEDS=7,99 SPARSITIES=0.99 converged.sh.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, SGD (lr 0.03, cosine, batch 512).
# Usage: converged.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes. About 7-8 minutes a
# run on 2 quiet cores: 72 runs and 3 dense for seeds 0, 42, 123.
# --channels-last true: the same network in the channels_last memory layout, which trains VGG-11 (width
# 0.25) 1.40x and ResNet-20 1.24x as fast on this CPU (benchmarks/training.py, part 3, 1 thread); the
# trained weights agree with the default layout's to rounding (tests/test_train.py).
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
SPARSITIES=${SPARSITIES:-0.99,0.995,0.998}
OUT=${1:-docs/results/fashion_mnist/study/converged}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 15 --warmup-epochs 1 --lr 0.03 --schedule cosine
        --batch-size 512 --channels-last true)
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "$OUT" --grid "seed=$SEEDS" \
  criterion=random,magnitude,snip,synflow,hutch_diag,hutch_pruner,fisher_pruner,ggn_pruner \
  "sparsity=$SPARSITIES"
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "${OUT}_dense" --grid "seed=$SEEDS" criterion=random \
  sparsity=0.0
