#!/usr/bin/env bash
# Does the 2-epoch ranking hold with longer training? random, magnitude, snip, fisher_pruner, hutch_pruner
# and ggn_pruner at 0.99 trained for 15 epochs (seed 0), and a dense run with the same recipe.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, SGD (lr 0.03, cosine, batch 512).
# Usage: epochs15.sh [OUT] [extra sweep flags]. Rerunning resumes.
set -euo pipefail
OUT=${1:-docs/results/fashion_mnist/study/epochs15}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 15 --lr 0.03 --schedule cosine --batch-size 512)
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "$OUT" --grid seed=0 \
  criterion=random,magnitude,snip,fisher_pruner,hutch_pruner,ggn_pruner sparsity=0.99
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "${OUT}_dense" --grid seed=0 criterion=random sparsity=0.0
