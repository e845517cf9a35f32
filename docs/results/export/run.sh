#!/usr/bin/env bash
# The main job (quarter-width VGG-11 on Fashion-MNIST, HP at T = 200) at sparsity 0.9, 0.99 and 0.998, one
# scoring shared by the three points (the sweep's score cache), each point exported with `initprune
# export`, which prints the export's size against the dense model (its state_dict as torch.save writes
# it) and the run's checkpoint.pt (model and optimizer state).
# The size depends on the mask (scoring comes before training) and on the tensors' shapes, not on the
# training length: EPOCHS=0.05 (5 steps) gives the sizes of the 3-epoch main job to within the bytes of
# the settings recorded in the file.
# Usage: bash docs/results/export/run.sh [RUNS_DIR]   (from the repository root)
set -euo pipefail
runs=${1:-runs/export}
initprune sweep --grid sparsity=0.9,0.99,0.998 --epochs "${EPOCHS:-3}" --out "$runs" --quiet > /dev/null
for s in 0.9 0.99 0.998; do
    initprune export "$runs/sparsity=$s" "$runs/sparsity=$s.safetensors"
done
