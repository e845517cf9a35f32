"""Timing and peak-memory helpers shared by the benchmarks (ratios measured in one process)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def set_clock(name: str) -> None:
    """``wall`` (elapsed seconds) or ``cpu`` (this process's CPU seconds, all threads: steadier than wall
    time on a machine shared with other jobs, meaningless for work done on an accelerator)."""
    global _clock
    _clock = _CLOCKS[name]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """The current clock reading, the device synchronized first (for timing the steps of one loop)."""
    synchronize(device)
    return _clock()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one ``fn()`` on the current clock, the device synchronized before and after."""
    synchronize(device)
    start = _clock()
    fn()
    synchronize(device)
    return _clock() - start


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` wall-clock timings of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device) for _ in range(repeats))


def paired_ratio(
    fn: Callable[[], object],
    baseline: Callable[[], object],
    device: torch.device,
    repeats: int,
    long_call: float = 60.0,
) -> float:
    """Median over ``repeats`` of time(fn) / time(baseline), each pair timed back to back (after one
    warm-up of each), alternating which goes first: robust to a machine whose speed drifts.

    The warm-up call of ``fn`` is timed too: when it takes at least ``long_call`` seconds, its first-call
    costs (allocator, kernel selection) are lost in it, so it counts as the first pair's ``fn`` time,
    against a baseline timed right after it. A call of many minutes then runs once, not twice.
    """
    first = timed(fn, device)
    baseline()
    ratios = [first / timed(baseline, device)] if first >= long_call else []
    for i in range(len(ratios), repeats):
        pair = {}
        for name in ("fn", "baseline") if i % 2 == 0 else ("baseline", "fn"):
            pair[name] = timed(fn if name == "fn" else baseline, device)
        ratios.append(pair["fn"] / pair["baseline"])
    return statistics.median(ratios)


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by torch while ``fn()`` runs, above what was allocated before it.

    CUDA: the caching allocator's peak counter. CPU: the running sum of the profiler's allocation and
    free events in time order.
    """
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def vgg_small(num_classes: int = 10) -> nn.Module:
    """A VGG-style net with BatchNorm: 16-32-64-128 channels, a max-pool after each pair of convs."""
    layers: list[nn.Module] = []
    channels = 3
    for width, pool in (
        (16, False),
        (16, True),
        (32, False),
        (32, True),
        (64, False),
        (64, True),
        (128, True),
    ):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)
