"""One sample at a time: hutch_diag's loop route (reverse-over-reverse) against forward-over-reverse.

    PYTHONPATH=$PWD python docs/results/scoring_cpu/forward_over_reverse.py vgg16 2

Per sample (CPU seconds, one thread), two alternating rounds: the loop route, the vmap route with
``method="jvp"`` at chunks of one sample (vmap over the ten probes), and a loop of ``jvp`` of ``grad``
(one probe at a time, each recomputing the gradient); then the largest relative difference of the
estimates (they are the same probes).
"""

from __future__ import annotations

import sys
import time

import torch
from torch.func import grad, jvp

sys.path.insert(0, "benchmarks")  # build() and the data of benchmarks/scoring.py

from scoring import build, scoring_data

from initprune.curvature import hutchinson_diagonal, rademacher_probes
from initprune.curvature.samples import functional_parts, per_sample_loss_fn
from initprune.prunable import prunable_parameters

torch.set_num_threads(1)
name, samples = sys.argv[1], int(sys.argv[2])
cpu = torch.device("cpu")
model = build(name, cpu)
params = prunable_parameters(model)
x, y = scoring_data(cpu, per_class=1)[0]
data = [(x[:samples], y[:samples])]
probed, fixed = functional_parts(model, params)
loss = per_sample_loss_fn(model, fixed, 200.0)
shapes = {k: p.shape for k, p in probed.items()}


def jvp_loop() -> dict:
    total = {k: torch.zeros_like(p) for k, p in probed.items()}
    for i in range(samples):
        z = rademacher_probes(shapes, 10, 1, 0, cpu, torch.float32, start=i)

        def gradient(p: dict, i: int = i) -> dict:
            return grad(loss)(p, x[i], y[i])

        for j in range(10):
            tangent = {k: v[0, j] for k, v in z.items()}
            _, hz = jvp(gradient, (probed,), (tangent,))
            for k in total:
                total[k].addcmul_(tangent[k], hz[k])
    return total


def timed(fn) -> tuple[float, dict]:
    start = time.process_time()
    result = fn()
    return time.process_time() - start, result


def hutch(**kwargs) -> dict:
    options = {"probes": 10, "temperature": 200.0, "seed": 0, "chunk_size": 1}
    return hutchinson_diagonal(model, params, data, **options, **kwargs)


for _ in range(2):
    ta, a = timed(lambda: hutch(route="loop"))
    tb, b = timed(lambda: hutch(route="vmap", method="jvp"))
    tc, c = timed(jvp_loop)
    print(
        f"{name} per sample: loop (reverse-over-reverse) {ta / samples:.2f}s, vmap over probes "
        f"forward-over-reverse {tb / samples:.2f}s, loop of jvp {tc / samples:.2f}s",
        flush=True,
    )
k = next(iter(a))
print(
    "agree",
    float((a[k] * samples * 10 - c[k]).abs().max() / c[k].abs().max()),
    float((a[k] - b[k]).abs().max() / a[k].abs().max()),
)
