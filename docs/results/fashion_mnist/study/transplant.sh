#!/usr/bin/env bash
# The mechanism, tested: does the allocation across layers decide the high-sparsity end? Each layer's
# density is taken from HP's mask, from SynFlow's mask (the main grid's runs of the same seed and
# sparsity, --layer-densities RUN_DIR) or from ERK (--scope erk), and filled within each layer by
# magnitude, random, exact OBD (ggn_pruner) and HP. If allocation decides, the rows with SynFlow's
# densities rank together whatever fills them. At 0.99 and 0.998, seeds 0, 42, 123, 2 epochs.
# Base settings of main_grid.sh unless said: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20
# batches, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512).
# Usage: transplant.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes. MAIN: the main
# grid's folder (default docs/results/fashion_mnist/study/main), which must hold the source runs.
# Folders: OUT/densities=<hutch_pruner|synflow>,seed=S,sparsity=X/criterion=C and OUT/densities=erk/...
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
MAIN=${MAIN:-docs/results/fashion_mnist/study/main}
OUT=${1:-docs/results/fashion_mnist/study/transplant}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
FILL=criterion=magnitude,random,ggn_pruner,hutch_pruner
for seed in ${SEEDS//,/ }; do
  for sparsity in 0.99 0.998; do
    for source in hutch_pruner synflow; do
      from="$MAIN/seed=$seed,criterion=$source,sparsity=$sparsity"
      [ -f "$from/result.json" ] || { echo "transplant.sh: $from/result.json missing" >&2; exit 1; }
      initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --layer-densities "$from" \
        --out "$OUT/densities=$source,seed=$seed,sparsity=$sparsity" --grid "seed=$seed" "$FILL" \
        "sparsity=$sparsity"
    done
  done
done
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --scope erk --out "$OUT/densities=erk" --grid "seed=$SEEDS" \
  "$FILL" sparsity=0.99,0.998
