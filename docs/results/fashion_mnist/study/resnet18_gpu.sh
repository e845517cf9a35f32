#!/usr/bin/env bash
# On a GPU: ResNet-18 on Fashion-MNIST for 30 epochs, for the main grid's hutch_pruner, ggn_pruner,
# fisher_pruner, snip, magnitude and random at 0.99 and 0.998, and a dense run; seeds outermost.
# Base settings of main_grid.sh otherwise (BatchNorm warmup of 20 batches, global scope, 100 scoring
# samples, SGD lr 0.03 cosine, batch 512), with bf16 autocast and channels-last on CUDA (amp/channels_last
# auto). A run takes about a minute on an H100/H200, so 13 runs per seed.
# Usage: resnet18_gpu.sh [OUT] [extra sweep flags]; SEEDS=0 for one seed; DATA_DIR if Fashion-MNIST is not
# where Debian's dataset-fashion-mnist puts it (copy /usr/share/datasets/fashion-mnist/*.gz to a folder of
# the machine). Rerunning resumes.
set -euo pipefail
OUT=${1:-docs/results/fashion_mnist/study/resnet18_gpu}
EXTRA=("${@:2}")
SEEDS=${SEEDS:-0,42,123}
DATA=()
[ -n "${DATA_DIR:-}" ] && DATA=(--data-dir "$DATA_DIR")
COMMON=(--quiet --model resnet18 --dataset fashion_mnist "${DATA[@]}" --warmup-batches 20 --scope global
        --scoring-per-class 10 --epochs 30 --lr 0.03 --schedule cosine --batch-size 512 --device cuda)
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "$OUT" --grid "seed=$SEEDS" \
  criterion=hutch_pruner,ggn_pruner,fisher_pruner,snip,magnitude,random sparsity=0.99,0.998
initprune sweep "${COMMON[@]}" "${EXTRA[@]}" --out "${OUT}_dense" --grid "seed=$SEEDS" criterion=random \
  sparsity=0.0
