#!/usr/bin/env bash
# The whole study, most decisive first: the main grid, then the warmup, scope and reference-code ablations
# with all seeds, the 15-epoch check, then the rest (temperature, probes, scoring samples, PaT, and the
# longest, ResNet-20) for seed 0 and only then for seeds 42 and 123, so a study cut short has every
# ablation at seed 0. Every script resumes where it stopped, so this can be rerun after any interruption;
# a script that fails is reported and the next one starts.
# Usage: run_all.sh [DIR] (default docs/results/fashion_mnist/study).
set -euo pipefail
DIR=${1:-docs/results/fashion_mnist/study}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
step() {  # step NAME SEEDS
  local name=$1 out="$DIR/$1"
  [ "$name" = main_grid ] && out="$DIR/main"
  echo "[$(date -u +%H:%M:%S)] study: $name (seeds $2) -> $out"
  SEEDS=$2 bash "$HERE/$name.sh" "$out" || echo "[$(date -u +%H:%M:%S)] study: $name stopped with exit $?; going on"
}
for name in main_grid warmup scope reference epochs15; do step "$name" 0,42,123; done
for seeds in 0 0,42,123; do
  for name in temperature probes scoring_samples pat resnet20; do step "$name" "$seeds"; done
done
