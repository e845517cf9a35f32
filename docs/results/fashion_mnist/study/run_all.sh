#!/usr/bin/env bash
# The whole study, most decisive first: the main grid, then the warmup, scope and reference-code
# ablations, the 15-epoch check, then the rest. Every script resumes where it stopped, so this can be rerun
# after any interruption; a script that fails is reported and the next one starts.
# Usage: run_all.sh [DIR] (default docs/results/fashion_mnist/study).
set -euo pipefail
DIR=${1:-docs/results/fashion_mnist/study}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for name in main_grid warmup scope reference epochs15 resnet20 temperature probes scoring_samples pat; do
  out="$DIR/$name"
  [ "$name" = main_grid ] && out="$DIR/main"
  echo "[$(date -u +%H:%M:%S)] study: $name -> $out"
  bash "$HERE/$name.sh" "$out" || echo "[$(date -u +%H:%M:%S)] study: $name stopped with exit $?; going on"
done
