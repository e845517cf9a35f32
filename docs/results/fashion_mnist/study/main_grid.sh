#!/usr/bin/env bash
# The study's main grid: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20 batches, global scope,
# 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512); 15 criteria x 5 sparsities x 3 seeds,
# seed outermost so that a whole seed lands first. Then a dense run per seed. Rerunning resumes.
set -euo pipefail
OUT=${1:-docs/results/fashion_mnist/study/main}
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
initprune sweep "${COMMON[@]}" --out "$OUT" --grid seed=0,42,123 \
  criterion=random,magnitude,grad_norm,snip,grasp,synflow,fisher_diag,fisher_pruner,fisher_taylor,hutch_diag,hutch_pruner,hutch_taylor,ggn_pruner,ggn_taylor,fisher_mc_pruner \
  sparsity=0.9,0.98,0.99,0.995,0.998
initprune sweep "${COMMON[@]}" --out "${OUT}_dense" --grid seed=0,42,123 criterion=random sparsity=0.0
