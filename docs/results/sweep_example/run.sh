#!/usr/bin/env bash
# The commands behind this example, run from the repository root. Writes the sweeps under /tmp (their
# run folders hold .pt files) and copies the report here.
set -euo pipefail
here=docs/results/sweep_example
rm -rf /tmp/sweep_example
/usr/bin/time -f "%e" -o $here/seconds_with_cache.txt \
  initprune sweep --config $here/grid.yaml --out /tmp/sweep_example/cached > /tmp/sweep_example_cached.log
/usr/bin/time -f "%e" -o $here/seconds_without_cache.txt \
  initprune sweep --config $here/grid.yaml --out /tmp/sweep_example/uncached --no-score-cache \
  > /tmp/sweep_example_uncached.log
initprune report /tmp/sweep_example/cached --out $here
