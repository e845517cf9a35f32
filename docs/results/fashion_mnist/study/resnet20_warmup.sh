#!/usr/bin/env bash
# Ablation: claim 2 on the second architecture - ResNet-20 (width 0.5) scored without BatchNorm warmup,
# for the data-dependent criteria of resnet20.sh at 0.99 and 0.998; the 20-batch runs are resnet20.sh's.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512); seeds outermost.
# Usage: resnet20_warmup.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes.
# SEEDS=0 runs seed 0 only (default 0,42,123).
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
OUT=${1:-docs/results/fashion_mnist/study/resnet20_warmup}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
initprune sweep "${COMMON[@]}" --model resnet20 --model-options width=0.5 "${EXTRA[@]}" --out "$OUT" \
  --grid "seed=$SEEDS" warmup_batches=0 criterion=snip,fisher_pruner,hutch_pruner,ggn_pruner \
  sparsity=0.99,0.998
