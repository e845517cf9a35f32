#!/usr/bin/env bash
# Check: does the ResNet-20 ranking at 0.99 (HP first, SynFlow behind on every seed after 2 epochs) hold
# after 15 epochs? HP, SynFlow, SNIP and magnitude at 0.99, seed 0; ResNet-20 at width 0.5 as in
# resnet20.sh. One seed: an indication, not a decision.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512).
# Usage: resnet20_epochs15.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes.
set -euo pipefail
OUT=${1:-docs/results/fashion_mnist/study/resnet20_epochs15}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 15 --lr 0.03 --schedule cosine --batch-size 512)
initprune sweep "${COMMON[@]}" --model resnet20 --model-options width=0.5 "${EXTRA[@]}" --out "$OUT" \
  --grid seed=0 criterion=hutch_pruner,synflow,snip,magnitude sparsity=0.99
