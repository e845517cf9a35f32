#!/usr/bin/env bash
# The whole study, most decisive first: the main grid, then the warmup, scope and reference-code ablations
# with all seeds, the 15-epoch check, then the rest (temperature, probes, scoring samples, PaT, and the
# longest, ResNet-20) for seed 0 and only then for seeds 42 and 123, so a study cut short has every
# ablation at seed 0; last, the warmup ablation and the 15-epoch check on ResNet-20. Every script resumes
# where it stopped, so this can be rerun after any interruption; a script that fails is reported and the
# next one starts.
# Then the decisive part (PART=decisive runs it alone; PART=first the part before it alone): the noise
# floor first (it sets what can be decided), converged 15-epoch VGG training with seeds 0, 42, 123, then
# seeds 7 and 99 at 0.99 (claim 1 at n = 5), converged ResNet-20, the allocation transplant, iterative curvature.
# Usage: [JOBS=N] [PART=all|first|decisive] run_all.sh [DIR] (default docs/results/fashion_mnist/study).
# JOBS=N (default 1) runs each script as N sweep shards side by side (--shard i/N), each with
# nproc/N torch threads (OMP_NUM_THREADS), for a machine with more cores than one run uses.
set -euo pipefail
DIR=${1:-docs/results/fashion_mnist/study}
JOBS=${JOBS:-1}
THREADS=$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))  # torch threads per shard when JOBS > 1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
step() {  # step NAME SEEDS
  local name=$1 out="$DIR/$1" pids=() i status=0
  [ "$name" = main_grid ] && out="$DIR/main"
  echo "[$(date -u +%H:%M:%S)] study: $name (seeds $2) -> $out"
  if [ "$JOBS" -le 1 ]; then
    SEEDS=$2 bash "$HERE/$name.sh" "$out" || status=$?
  else
    for ((i = 0; i < JOBS; i++)); do
      OMP_NUM_THREADS=$THREADS SEEDS=$2 bash "$HERE/$name.sh" "$out" --shard "$i/$JOBS" &
      pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || status=$?; done
  fi
  [ "$status" -eq 0 ] || echo "[$(date -u +%H:%M:%S)] study: $name stopped with exit $status; going on"
}
PART=${PART:-all}
case "$PART" in all | first | decisive) ;; *) echo "run_all.sh: PART must be all, first or decisive, got '$PART'" >&2; exit 2 ;; esac
if [ "$PART" != decisive ]; then
  for name in main_grid warmup scope reference epochs15; do step "$name" 0,42,123; done
  for seeds in 0 0,42,123; do
    for name in temperature probes scoring_samples pat resnet20; do step "$name" "$seeds"; done
  done
  step resnet20_warmup 0,42,123
  step resnet20_epochs15 0
fi
if [ "$PART" != first ]; then
  step noise_floor 0
  step converged 0,42,123
  SPARSITIES=0.99 step converged 7,99
  for name in converged_resnet20 transplant iterative; do step "$name" 0,42,123; done
fi
