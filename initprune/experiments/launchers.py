"""Launchers of a sweep's points: one after the other in this process (``local``), or one Ray task per
point on a local Ray instance or an existing cluster (``ray``). Both write the same folders (the run's own
resume makes a retried or rerun point continue where it stopped) and return {point folder: error} of the
points that failed; a failed point never stops the others.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InitpruneError
from .cache import cacheable, score_key
from .config import RunConfig
from .grid import point_folder
from .run import run_experiment

logger = logging.getLogger(__name__)

Points = Sequence[tuple[dict[str, Any], RunConfig]]

RAY_INSTALL = "pip install 'initprune[ray]'"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def run_local(points: Points, *, cache: Path | None, progress: Any) -> dict[str, str]:
    """Run ``points`` one after the other; ``progress`` is the sweep's tracker."""
    errors = {}
    for point, config in points:
        folder = point_folder(point)
        progress.started(folder)
        try:
            run_experiment(config, progress=progress.enabled, score_cache=cache)
        except Exception as exc:  # recorded, and the sweep goes on (Ctrl-C is not an Exception)
            logger.warning("point %s failed:\n%s", folder, traceback.format_exc())
            errors[folder] = _describe(exc)
            progress.ended(folder, errors[folder])
        else:
            progress.ended(folder)
    return errors


def _run_point(config: RunConfig, cache: str | None) -> str:
    """The body of one Ray task: the run, with its bars and stage lines off (the driver reports)."""
    run_experiment(config, progress=False, score_cache=cache)
    return str(config.out)


def _share_group(config: RunConfig) -> str | None:
    """Points of one group share a scoring; None: not cacheable."""
    if not cacheable(config):
        return None
    key = {**score_key(config, torch.device("cpu")), "device": config.device}
    return json.dumps(key, sort_keys=True, default=str)


def run_ray(
    points: Points,
    *,
    cache: Path | None,
    progress: Any,
    address: str | None = None,
    gpus_per_run: float | None = None,
    cpus_per_run: float = 1,
    retries: int = 1,
) -> dict[str, str]:
    """Run every point as a Ray task on the cluster at ``address`` (None: a Ray instance already started in
    this process, else a new local one). Each task asks for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs
    (fractions put several runs on one GPU; None: 1 where the cluster has GPUs, else 0). A failed task is
    retried ``retries`` times, then its error is returned. Points that share a scoring run after the first
    of them, so the others read its scores from the cache instead of computing them in parallel.
    """
    try:
        import ray
    except ImportError:
        raise InitpruneError(f"--launcher ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    if retries < 0:
        raise InitpruneError(f"--retries must be >= 0, got {retries}")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        if gpus_per_run is None:
            gpus_per_run = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
        task = ray.remote(_run_point).options(
            num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=retries, retry_exceptions=True
        )
        return _schedule(
            [(p, _absolute(c)) for p, c in points],
            lambda config: task.remote(config, None if cache is None else str(Path(cache).resolve())),
            ray.wait,
            ray.get,
            progress,
        )
    finally:
        if started_here:
            ray.shutdown()


def _absolute(config: RunConfig) -> RunConfig:
    """Workers may run in other folders: give them the run folder as an absolute path."""
    return dataclasses.replace(config, out=str(Path(config.out or "").resolve()))


def _schedule(
    points: Points,
    submit: Callable[[RunConfig], Any],
    wait: Callable[..., Any],
    get: Callable[[Any], Any],
    progress: Any,
) -> dict[str, str]:
    """Submit the first point of every scoring group (and every uncached point) at once, the rest of a
    group when its first ends; collect each result or error as it arrives."""
    followers: dict[str, list[tuple[dict, RunConfig]]] = {}
    first: list[tuple[dict, RunConfig]] = []
    for point, config in points:
        group = _share_group(config)
        if group is not None and group in followers:
            followers[group].append((point, config))
        else:
            first.append((point, config))
            if group is not None:
                followers[group] = []
    pending: dict[Any, tuple[dict, RunConfig]] = {}
    for point, config in first:
        pending[submit(config)] = (point, config)
    progress.line(
        f"submitted {len(pending)} of {len(points)} points; the others follow the point whose scoring "
        "they share"
    )
    errors: dict[str, str] = {}
    while pending:
        (ref,), _ = wait(list(pending), num_returns=1)
        point, config = pending.pop(ref)
        folder = point_folder(point)
        try:
            get(ref)
        except Exception as exc:
            cause = getattr(exc, "cause", None) or exc
            errors[folder] = _describe(cause)
            progress.ended(folder, errors[folder])
        else:
            progress.ended(folder)
        for later in followers.pop(_share_group(config) or "", []):
            pending[submit(later[1])] = later
    return errors


LAUNCHERS: dict[str, Callable[..., dict[str, str]]] = {"local": run_local, "ray": run_ray}
