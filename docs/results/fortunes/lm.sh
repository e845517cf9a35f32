#!/usr/bin/env bash
# Study 1, text LM (fortunes_lm, transformer_lm): the grid of lm/grid.yaml (12 criteria × 5 sparsities ×
# 3 seeds), the dense reference (lm/dense.yaml), the layerwise-scope check (lm/layerwise), then `initprune report` into lm/report. Run folders go to
# lm/main and lm/dense (masks and checkpoints are not committed). Rerunning resumes where it stopped.
#
# Timing (README.md has the command line): one hutch_pruner run of 0.1 epoch (the grid's settings
# otherwise) took 359 s wall on this 2-core machine at load average ~18 (shared): scoring 84 s (64 sequences x 10 probes), training 201 s.
# A training step (batch 64 x 128 bytes) is 0.18 s of CPU on one thread (2.3 s wall at that load); an epoch
# is 274 steps (~50 s CPU), so 2 epochs + evaluations are ~105 s per run and the 183 runs ~5.5 h on an
# idle core (scorings shared across sparsities by the score cache); ~12x longer at that load.
#
# Usage: docs/results/fortunes/lm.sh [extra sweep flags, e.g. --shard 0/2]
# LONG=1 adds the longer check: the top criteria (TOP, default below: random and magnitude lead the grid)
# on seed 0 with 3× the epochs (6) at sparsities 0.9 and 0.98, in lm/long, and dense likewise (lm/long_dense).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=${TOP:-random,hutch_pruner,fisher_pruner,fisher_mc_pruner,snip,magnitude}
initprune sweep --config "$HERE/lm/grid.yaml" --out "$HERE/lm/main" --quiet "$@"
initprune sweep --config "$HERE/lm/dense.yaml" --out "$HERE/lm/dense" --quiet "$@"
# Attention kept: every data-dependent criterion leaves the q and k projections empty at initialization
# already at 0.5 (init_saliency.md: their scores are ~100x below the rest). With the layerwise scope each
# layer keeps 1 - s of its weights, q and k too: the top criteria and magnitude at 0.9 and 0.98 (30 runs).
initprune sweep --config "$HERE/lm/grid.yaml" --out "$HERE/lm/layerwise" --quiet "$@" --scope layerwise \
  --grid criterion=magnitude,snip,fisher_pruner,hutch_pruner,fisher_mc_pruner sparsity=0.9,0.98
if [ "${LONG:-0}" = 1 ]; then
  initprune sweep --config "$HERE/lm/grid.yaml" --out "$HERE/lm/long" --quiet "$@" \
    --grid seed=0 "criterion=$TOP" sparsity=0.9,0.98 --epochs 6
  initprune sweep --config "$HERE/lm/dense.yaml" --out "$HERE/lm/long_dense" --quiet "$@" --grid seed=0 --epochs 6
fi
# The report with the paired verdicts: the claims fixed before the runs (claims.yaml) and, when its runs
# exist, the layerwise check's comparisons (layerwise.yaml, a follow-up), each file corrected as its own
# family; then the README's main table. A comparison that pairs no runs yet (another shard still running)
# stops the report: rerun this script once every shard has finished.
FAMILIES=(--comparisons "$HERE/lm/claims.yaml")
[ -d "$HERE/lm/layerwise" ] && FAMILIES+=(--comparisons "$HERE/lm/layerwise.yaml")
initprune report "$HERE/lm" --out "$HERE/lm/report" "${FAMILIES[@]}" ||
  echo "lm.sh: the report waits for runs still missing; rerun lm.sh when every shard has finished" >&2
python "$HERE/main_table.py" lm
