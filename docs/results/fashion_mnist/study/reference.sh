#!/usr/bin/env bash
# What the paper's reference code (github Gollini/Scalable_Second_Order_PaI) does differently, measured on the
# testbed: grasp, synflow and hutch_pruner at 0.99 and 0.998, with each reproduction option alone and with all
# of them together (as configs/paper_reference/). The corrected baseline is the main grid (same settings).
# Folders OUT_<variant>:
#   grasp_reference  grasp keeps the largest −θ⊙Hg over all parameters at T = 1
#                    (criterion options reference_sign=true hvp_scope=all temperature=1)
#   schedule         synflow's schedule read as sparsity, with its mask rule (round_schedule=sparsity)
#   probe_all        hutch_pruner probes every parameter (criterion option probe_scope=all)
#   init             PyTorch's default initialization and conv biases (model options init=pytorch
#                    conv_bias=true), for all three criteria
#   protocol         all training images, best epoch on the test set (val_size=0, select_best_on_test=true),
#                    for all three criteria
#   all_<criterion>  everything above at once
#   warmup_pass      the BatchNorm warmup is one pass over the training data in file order
#                    (--warmup-batches none --no-warmup-shuffle; the testbed trains without augmentation,
#                    so --warmup-augment and --scoring-redraw change nothing here and are not run)
#   no_shuffle       the training loader does not shuffle (--no-train-shuffle)
# (The shortcut BatchNorm rule, shortcut_bn_scales, is for ResNets and changes nothing on VGG.)
# Base settings of main_grid.sh: VGG-11 at width 0.25 on Fashion-MNIST, BatchNorm warmup of 20 batches,
# global scope, 100 scoring samples, 2 epochs of SGD (lr 0.03, cosine, batch 512); seeds outermost.
# Usage: reference.sh [OUT] [extra sweep flags, e.g. --shard 0/2]. Rerunning resumes.
# SEEDS=0 runs seed 0 only (default 0,42,123).
set -euo pipefail
SEEDS=${SEEDS:-0,42,123}  # comma-separated
OUT=${1:-docs/results/fashion_mnist/study/reference}
EXTRA=("${@:2}")
COMMON=(--quiet --model vgg11 --model-options width=0.25 --dataset fashion_mnist --warmup-batches 20
        --scope global --scoring-per-class 10 --epochs 2 --lr 0.03 --schedule cosine --batch-size 512)
GRASP=(--criterion-options reference_sign=true hvp_scope=all temperature=1)
INIT=(--model-options width=0.25 init=pytorch conv_bias=true)
PROTOCOL=(--val-size 0 --select-best-on-test)
ALL=("${INIT[@]}" "${PROTOCOL[@]}" --round-schedule sparsity)
sweep() {  # sweep NAME CRITERIA [FLAGS...]
  local name=$1 criteria=$2; shift 2
  initprune sweep "${COMMON[@]}" "$@" "${EXTRA[@]}" --out "${OUT}_${name}" \
    --grid "seed=$SEEDS" "criterion=$criteria" sparsity=0.99,0.998
}
sweep grasp_reference grasp "${GRASP[@]}"
sweep schedule synflow --round-schedule sparsity
sweep probe_all hutch_pruner --criterion-options probe_scope=all
sweep init grasp,synflow,hutch_pruner "${INIT[@]}"
sweep protocol grasp,synflow,hutch_pruner "${PROTOCOL[@]}"
sweep all_grasp grasp "${ALL[@]}" "${GRASP[@]}"
sweep all_synflow synflow "${ALL[@]}"
sweep all_hutch_pruner hutch_pruner "${ALL[@]}" --criterion-options probe_scope=all
sweep warmup_pass grasp,synflow,hutch_pruner --warmup-batches none --no-warmup-shuffle
sweep no_shuffle grasp,synflow,hutch_pruner --no-train-shuffle
