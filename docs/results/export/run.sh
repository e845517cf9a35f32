#!/usr/bin/env bash
# The main job (quarter-width VGG-11 on Fashion-MNIST, HP, 3 epochs) at three sparsities, each exported
# with `initprune export`; prints the export's size against the dense model and the run's checkpoint.
# Usage: bash docs/results/export/run.sh [RUNS_DIR]   (from the repository root)
set -euo pipefail
runs=${1:-runs/export}
for s in 0.9 0.99 0.998; do
    initprune run --sparsity "$s" --out "$runs/s$s" --quiet > /dev/null
    initprune export "$runs/s$s" "$runs/s$s.safetensors"
done
