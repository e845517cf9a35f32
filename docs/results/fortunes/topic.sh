#!/usr/bin/env bash
# Study 2, text classification (fortunes_topic, transformer_cls): the grid of topic/grid.yaml (12 criteria ×
# 3 sparsities × 3 seeds), the dense reference (topic/dense.yaml), then `initprune report` into topic/report.
# Run folders go to topic/main and topic/dense (masks and checkpoints are not committed). Rerunning resumes.
#
# Timing (README.md has the command line): one hutch_pruner run of 0.2 epoch (the grid's settings
# otherwise) took 431 s wall on this 2-core machine at load average ~18 (shared): scoring 222 s (170 texts
# x 10 probes), training 167 s. A training step (batch 64 x 128 bytes) is 0.14 s of CPU on one thread
# (1.7 s wall at that load); an epoch is 150 steps (~21 s CPU), so 6 epochs + evaluations are ~135 s per
# run and the 111 runs ~4 h on an idle core; ~12x longer at that load.
#
# Usage: docs/results/fortunes/topic.sh [extra sweep flags, e.g. --shard 0/2]
# LONG=1 adds the longer check: the top criteria (TOP, default below: random and magnitude as the data-free
# references, HP for claim 1, and the criteria it is compared with) on seed 0 with 3× the epochs (18) at
# sparsities 0.98 and 0.99, in topic/long, and dense likewise (topic/long_dense).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=${TOP:-random,magnitude,snip,fisher_pruner,ggn_pruner,hutch_pruner}
initprune sweep --config "$HERE/topic/grid.yaml" --out "$HERE/topic/main" --quiet "$@"
initprune sweep --config "$HERE/topic/dense.yaml" --out "$HERE/topic/dense" --quiet "$@"
if [ "${LONG:-0}" = 1 ]; then
  initprune sweep --config "$HERE/topic/grid.yaml" --out "$HERE/topic/long" --quiet "$@" \
    --grid seed=0 "criterion=$TOP" sparsity=0.98,0.99 --epochs 18
  initprune sweep --config "$HERE/topic/dense.yaml" --out "$HERE/topic/long_dense" --quiet "$@" --grid seed=0 \
    --epochs 18
fi
# The report with the paired verdicts fixed before the runs, one family per claim (claim1.yaml, claim3.yaml,
# each Holm-corrected apart), then the README's main table. A comparison that pairs no runs yet (another
# shard still running) stops the report: rerun when all finish.
initprune report "$HERE/topic" --out "$HERE/topic/report" \
  --comparisons "$HERE/topic/claim1.yaml" --comparisons "$HERE/topic/claim3.yaml" ||
  echo "topic.sh: the report waits for runs still missing; rerun topic.sh when every shard has finished" >&2
python "$HERE/main_table.py" topic
