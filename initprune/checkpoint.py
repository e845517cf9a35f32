"""Training checkpoints and random states: what an interrupted run needs to end exactly as an
uninterrupted one would (model, optimizer, scheduler, history, and every generator it draws from)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_torch_save
from .errors import InitpruneError

if TYPE_CHECKING:
    from .train_config import TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
# Fields that may change between a run and its resumption.
COSMETIC_FIELDS = ("log_every",)


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a loader shuffles with (DataLoader(generator=...), a sampler's generator)."""
    found: list[torch.Generator] = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def rng_state(loader: Any) -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": [version, list(mt), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "loader": [g.get_state() for g in loader_generators(loader)],
    }


def set_rng_state(state: Mapping[str, Any], loader: Any) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    generators = loader_generators(loader)
    if len(generators) != len(state["loader"]):
        raise InitpruneError(
            f"the checkpoint holds {len(state['loader'])} loader generator state(s) but the training loader "
            f"has {len(generators)}; resume with the same kind of loader"
        )
    for g, s in zip(generators, state["loader"], strict=True):
        g.set_state(s)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device


def _load(path: Path, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's dict; a file that does not load or is not a checkpoint raises, saying what to do."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # a truncated or foreign file: say which, in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InitpruneError(
            f"training checkpoint {str(path)!r} is corrupt ({first}); delete it and run the same command "
            "again to train from the start"
        ) from None
    if not isinstance(state, dict) or state.get("format") != "initprune.train":
        raise InitpruneError(
            f"{str(path)!r} is not an initprune training checkpoint; delete it and run the same command "
            "again to train from the start"
        )
    return state


def checkpoint_settings_hash(path: Path) -> str | None:
    """The settings hash a checkpoint was written with (None if it carries none), read without loading
    its tensors (memory-mapped)."""
    return _load(path, mmap=True).get("settings_hash")


def read_checkpoint(
    path: Path, config: TrainConfig, steps_per_epoch: int, settings_hash: str | None = None
) -> dict[str, Any]:
    """The checkpoint at ``path``, checked against the training ``config``, the loader's length and (when
    given and the checkpoint carries one) the run's ``settings_hash``."""
    state = _load(path)
    found = state.get("settings_hash")
    if settings_hash is not None and found is not None and found != settings_hash:
        raise InitpruneError(
            f"checkpoint {str(path)!r} belongs to another run (settings hash {found}, this run's is "
            f"{settings_hash}); delete it, or use the folder of the run it belongs to"
        )
    ours, theirs = config.to_dict(), state["config"]
    # a field added after the checkpoint was written means its default there
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    theirs = {**{k: v for k, v in defaults.items() if k not in theirs}, **theirs}
    changed = [k for k in ours if k not in COSMETIC_FIELDS and _plain(ours[k]) != _plain(theirs.get(k))]
    if changed:
        diffs = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours[k]!r}" for k in changed)
        raise InitpruneError(
            f"checkpoint {str(path)!r} was written with another configuration ({diffs}); "
            "use another checkpoint directory or the same configuration"
        )
    if state["steps_per_epoch"] != steps_per_epoch:
        raise InitpruneError(
            f"checkpoint {str(path)!r} has {state['steps_per_epoch']} steps per epoch but the training "
            f"loader has {steps_per_epoch} batches"
        )
    return state


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    epoch: int,
    step: int,
    steps_per_epoch: int,
    history: list[dict[str, Any]],
    loader: Any = None,
    settings_hash: str | None = None,
) -> None:
    """Write a training checkpoint atomically; ``torch.load(weights_only=True)`` reads it. A
    ``settings_hash`` (the run's) is stored with it and checked when it is read back."""
    state = {
        "format": "initprune.train",
        "version": 1,
        "config": config.to_dict(),
        "epoch": epoch,
        "step": step,
        "steps_per_epoch": steps_per_epoch,
        "history": history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(loader),
    }
    if settings_hash is not None:
        state["settings_hash"] = settings_hash
    atomic_torch_save(state, path)
