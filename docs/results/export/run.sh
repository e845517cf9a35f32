#!/usr/bin/env bash
# The main job (quarter-width VGG-11 on Fashion-MNIST, HP at T = 200, 3 epochs) at sparsity 0.9, 0.99 and
# 0.998, each exported with `initprune export`, which prints the export's size against the dense model
# (its state_dict as torch.save writes it) and the run's checkpoint.pt (model and optimizer state).
# The size depends on the mask (scoring comes before training) and on the tensors' shapes, not on the
# training length: EPOCHS=1 gives the same sizes in a third of the time.
# Usage: bash docs/results/export/run.sh [RUNS_DIR]   (from the repository root)
set -euo pipefail
runs=${1:-runs/export}
epochs=${EPOCHS:-3}
for s in 0.9 0.99 0.998; do
    initprune run --sparsity "$s" --epochs "$epochs" --out "$runs/s$s-e$epochs" --quiet > /dev/null
    initprune export "$runs/s$s-e$epochs" "$runs/s$s-e$epochs.safetensors"
done
