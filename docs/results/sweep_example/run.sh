#!/usr/bin/env bash
# The commands behind this example, run from the repository root. The two sweeps (with and without the
# score cache) run at the same time, so that both meet the same load on a shared machine; their run
# folders (with .pt files) go to /tmp, the report comes here.
set -euo pipefail
here=docs/results/sweep_example
rm -rf /tmp/sweep_example
mkdir -p /tmp/sweep_example
/usr/bin/time -f "%e" -o $here/seconds_with_cache.txt \
  initprune sweep --config $here/grid.yaml --out /tmp/sweep_example/cached \
  > /tmp/sweep_example/cached.log &
/usr/bin/time -f "%e" -o $here/seconds_without_cache.txt \
  initprune sweep --config $here/grid.yaml --out /tmp/sweep_example/uncached --no-score-cache \
  > /tmp/sweep_example/uncached.log &
wait
initprune report /tmp/sweep_example/cached --out $here
# the table of timings in README.md: sums over the runs' result.json (scoring_seconds of the scorings
# computed, i.e. scores_cached false; train_seconds)
