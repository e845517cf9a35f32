#!/usr/bin/env bash
# Beyond the paper: iterative curvature. FP, HP and exact OBD (ggn_pruner) pruned in 10 and 100 rounds
# with SynFlow's exponential schedule (density d^((t+1)/R), rescored every round) at 0.995 and 0.998, 3
# seeds: does iterating give the curvature criteria the allocation that lets SynFlow train at 0.998?
# Every round scores in eval mode; OUT holds the pipeline's default (each round with the BatchNorm
# statistics of the first warmup), OUT_round_warmup the same grid with the warmup run again before every
# later round (`--round-warmup`), which tells the criteria apart from their stale statistics.
# Iterative scorings are not cached: HP's 100 rounds cost 100 HP scorings (the longest runs of the study).
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, global scope, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512).
# Order: 10 rounds for every seed (default, then with the round warmup), then FP and exact OBD in 100
# rounds (the same two), then HP in 100 rounds (100 HP scorings a run, the longest), each into its
# folder (one summary per folder over its grids): a study cut short has the cheaper questions answered
# at n = 3.
# Usage: iterative.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes.
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
OUT=${1:-docs/results/fashion_mnist/study/iterative}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
# (rounds, criteria) in this order; each grid once per variant, into the variant's folder
for part in "10 fisher_pruner,ggn_pruner,hutch_pruner" "100 fisher_pruner,ggn_pruner" "100 hutch_pruner"; do
  read -r rounds criteria <<< "$part"
  for variant in default round_warmup; do
    if [ "$variant" = default ]; then out=$OUT; flags=(); else out=${OUT}_round_warmup; flags=(--round-warmup); fi
    initprune sweep "${COMMON[@]}" "${flags[@]}" "${EXTRA[@]}" --out "$out" --grid "seed=$SEEDS" \
      "rounds=$rounds" "criterion=$criteria" sparsity=0.995,0.998
  done
done
