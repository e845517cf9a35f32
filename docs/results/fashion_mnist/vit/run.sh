#!/usr/bin/env bash
# Study 3, layer collapse in a ViT with and without BatchNorm statistic updates (Fashion-MNIST, vit_tiny
# patch 7, dim 64, depth 4): the BatchNorm variant with warmup 0 / 20 batches / one pass
# (batchnorm.yaml, 216 runs), the LayerNorm control (layernorm.yaml, 72 runs), the dense references
# (dense.yaml, 6 runs), then `initprune report` into report/ and the main tables. Run folders go to
# batchnorm/, layernorm/ and dense/ here (masks and checkpoints are not committed). Rerunning resumes where
# it stopped.
#
# Timing (README.md has the command line): one ggn_pruner run of 0.1 epoch, BatchNorm variant with a
# 20-batch warmup (the grid's settings otherwise), took 629 s wall on this 2-core machine at load average
# ~18 (shared): warmup 102 s, scoring 107 s, training 331 s. A training step (batch 128) is 0.072 s of CPU
# on one thread (0.87 s wall at that load); an epoch is 430 steps (~31 s CPU), so 2 epochs + evaluations
# are ~70 s per run and the 294 runs ~5.7 h on an idle core; ~12x longer at that load.
#
# Usage: docs/results/fashion_mnist/vit/run.sh [extra sweep flags, e.g. --shard 0/2]
# LONG=1 adds the longer check: the top criteria (TOP: random and magnitude, the best at 0.98 and 0.99 on
# seed 0, and the five data-dependent criteria of the claims) on seed 0 at 0.98 and 0.99 with 3× the epochs
# (6), both variants, BatchNorm with one warmup pass, in long_batchnorm/ and long_layernorm/, and dense
# likewise (long_dense/).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=${TOP:-random,magnitude,snip,synflow,fisher_pruner,hutch_pruner,ggn_pruner}
# Seed 0 of every variant first, so a study cut short has all of its comparisons on one seed; then the
# whole grids (the seed-0 runs are skipped as done).
for seeds in 0 all; do
  for variant in batchnorm layernorm dense; do
    initprune sweep --config "$HERE/$variant.yaml" --out "$HERE/$variant" --quiet \
      $([ $seeds = 0 ] && echo --grid seed=0) "$@"
  done
done
if [ "${LONG:-0}" = 1 ]; then
  for variant in batchnorm layernorm; do
    initprune sweep --config "$HERE/$variant.yaml" --out "$HERE/long_$variant" --quiet "$@" \
      --grid seed=0 "criterion=$TOP" sparsity=0.98,0.99 --epochs 6 \
      $([ $variant = batchnorm ] && echo --warmup-batches none)
  done
  initprune sweep --config "$HERE/dense.yaml" --out "$HERE/long_dense" --quiet "$@" --grid seed=0 --epochs 6
fi
# The report with the paired verdicts fixed before the runs, one family per claim (claim2.yaml, claim1.yaml,
# each Holm-corrected apart). A comparison that pairs no runs yet (another shard still running) stops it:
# rerun run.sh when every shard has finished.
initprune report "$HERE" --out "$HERE/report" \
  --comparisons "$HERE/claim2.yaml" --comparisons "$HERE/claim1.yaml" ||
  echo "run.sh: the report waits for runs still missing; rerun run.sh when every shard has finished" >&2
# The README's main tables (main_table.md) and the q/k/v split of the fused qkv layers (qkv_split.md, from
# the masks, which stay in the run folders).
python "$HERE/main_table.py"
python "$HERE/qkv_split.py"
