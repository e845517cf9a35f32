"""The score cache of a sweep: one scoring shared by every grid point that differs only in what the scores
do not depend on (the sparsity, the pruning scope and the training settings).

An entry is keyed by a hash of every other setting of the run: the model and its options, the seed
(initialization and scoring probes), the dataset, its folder and options and the validation split (which
decide the scoring samples), the scoring samples per class and their augmentation, the BatchNorm warmup
(batches, cumulative averaging and, when it runs, the batch size of its loader), the criterion and its
options, the prunable choice (``include_classifier``, ``exclude_first``, ...) and the device type. Keying
on everything except a short list of settings known not to matter keeps a setting added later on the safe
side: it splits the cache rather than sharing wrong scores.

Only single-round scoring is cached. Iterative pruning (``rounds`` > 1, SynFlow's default 100 rounds)
rescores a model already pruned toward the target sparsity, so its scores depend on the sparsity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic import atomic_torch_save
from ..curvature.probes import PROBE_GENERATOR
from ..scores import get_criterion, score
from ..train_config import TrainConfig
from .config import RunConfig, default_settings

logger = logging.getLogger(__name__)

CACHE_DIR = "score_cache"

# Settings the scores of one round do not depend on: the mask's sparsity and scope, and everything that
# only acts after the mask is made (training). ``rounds`` is checked apart (only 1 round is cached).
_SCORE_FREE = frozenset(
    {"sparsity", "scope", "rounds", "out", "device", "epochs", "lr", "schedule"}
    | {"train_seed", "train_shuffle", "layer_densities"}  # the training's data order; the mask's allocation
    | {"round_warmup"}  # acts between rounds only
    | {name for name in TrainConfig.__dataclass_fields__}
)

# Settings added after the first caches were written that change scores: part of a key only when set.
_LATER_SCORE_KEYS = ("probe_seed", "warmup_augment", "warmup_shuffle", "scoring_redraw")


def cacheable(config: RunConfig) -> bool:
    """Whether ``config``'s scores can be shared across sparsities: one scoring round, from samples that
    are not redrawn on every pass (``scoring_redraw``)."""
    rounds = config.rounds if config.rounds is not None else get_criterion(config.criterion).default_rounds
    return rounds == 1 and not config.scoring_redraw  # redrawn samples: scores that never repeat


def probe_generator(criterion: str) -> str | None:
    """The name and version of the generator of ``criterion``'s random probes (the Hutchinson criteria), or
    None: which probes a seed draws depends on it."""
    return PROBE_GENERATOR if "probe_scope" in get_criterion(criterion).options else None


def score_key(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """The settings ``config``'s scores depend on (see the module docstring)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in _SCORE_FREE}
    generator = probe_generator(config.criterion)
    if generator is not None:  # scores cached with an earlier generator's probes are not these
        settings["probe_generator"] = generator
    settings["seed"] = config.seed  # a training field too, but it also seeds initialization and scoring
    if config.warmup_batches != 0:  # the warmup's loader draws batches of this size
        settings["batch_size"] = config.batch_size
    else:
        settings.pop("batch_size", None)
    defaults = default_settings()
    for key in _LATER_SCORE_KEYS:  # at its default, a later setting leaves the keys of earlier caches alone
        if key in settings and settings[key] == defaults[key]:
            del settings[key]
    settings["device_type"] = device.type
    return settings


def _digest(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ScoreCache:
    """Scores stored under ``folder`` (``<sweep>/score_cache``), one file per key, written atomically."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, settings: dict[str, Any]) -> Path:
        return self.folder / f"{settings.get('criterion', 'scores')}-{_digest(settings)}.pt"

    def load(self, settings: dict[str, Any], device: torch.device) -> tuple[dict[str, Tensor], float] | None:
        """(scores on ``device``, the seconds their scoring took), or None when not cached (or unreadable,
        which is logged and then recomputed)."""
        path = self.path(settings)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location=device, weights_only=True)
            if json.dumps(entry["settings"], sort_keys=True) != json.dumps(
                json.loads(json.dumps(settings, default=str)), sort_keys=True
            ):
                raise ValueError("its settings differ from the key")
            return dict(entry["scores"]), float(entry["scoring_seconds"])
        except Exception as exc:  # a corrupt entry costs one recomputation, never a wrong mask
            logger.warning("score cache entry %s is unreadable (%s); scoring again", path, exc)
            return None

    def store(self, settings: dict[str, Any], scores: dict[str, Tensor], scoring_seconds: float) -> None:
        entry = {
            "settings": json.loads(json.dumps(settings, default=str)),
            "scores": {name: s.detach().cpu() for name, s in scores.items()},
            "scoring_seconds": scoring_seconds,
            "torch": str(torch.__version__),
        }
        atomic_torch_save(entry, self.path(settings))

    def scores(
        self, settings: dict[str, Any], device: torch.device, compute: Callable[[], dict[str, Tensor]]
    ) -> tuple[dict[str, Tensor], float, bool]:
        """(scores, the seconds their scoring took, whether they came from the cache): cached ones, or
        ``compute()`` timed and stored."""
        hit = self.load(settings, device)
        if hit is not None:
            return hit[0], hit[1], True
        start = time.perf_counter()
        scores = compute()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        self.store(settings, scores, seconds)
        return scores, seconds, False


def caching_scorer(
    cache: ScoreCache, settings: dict[str, Any], device: torch.device
) -> tuple[Callable[..., dict[str, Tensor]], dict[str, Any]]:
    """(a stand-in for :func:`initprune.scores.score` that takes the scores from ``cache`` under
    ``settings`` or computes and stores them, a dict that then holds ``seconds``: the time the scoring
    took, and ``cached``: whether it came from the cache). For :func:`initprune.pruning.prune`'s
    ``scorer``: the mask is then made by ``prune`` as always, so it is the mask of an uncached run
    (scoring leaves the model as it was, so skipping it changes nothing else)."""
    info: dict[str, Any] = {}

    def scorer(*args: Any, **kwargs: Any) -> dict[str, Tensor]:
        if info:  # scores of a later round depend on the target sparsity: never under one key
            raise RuntimeError("a caching scorer scores one round only")
        scores, info["seconds"], info["cached"] = cache.scores(
            settings, device, lambda: score(*args, **kwargs)
        )
        return scores

    return scorer, info
