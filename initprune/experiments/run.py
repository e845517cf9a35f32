"""One complete pruning-at-initialization run, resumable, with every output written atomically.

The output folder holds ``config.yaml`` (the resolved settings), ``mask.pt`` and ``pruned_init.pt`` (the
mask and the pruned network before training: a run interrupted after scoring resumes from them),
``checkpoint.pt`` (after every epoch), ``metrics.jsonl`` (one line per epoch) and ``result.json``. A
finished run is not run again; an interrupted one resumes and ends as an uninterrupted one would.

With ``prune_after_training`` (PaT, the reference pruning at initialization is measured against) the
network is first trained dense for ``epochs`` in ``dense/`` (its own ``checkpoint.pt`` and
``metrics.jsonl``), then the trained network is scored by ``criterion`` and pruned at ``sparsity`` with
no BatchNorm warmup (its statistics are already those of the trained network), and the pruned trained
weights are retrained with the mask for ``epochs`` more, with a fresh optimizer and the same schedule
(no rewinding to the initialization). ``mask.pt`` and ``pruned_init.pt`` then hold the mask and the
pruned trained network. Both phases resume.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from ..atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from ..collapse import disconnected_layers
from ..data import load_dataset, scoring_batches
from ..distributed import barrier, from_main, init_from_env, is_main, shard_loader
from ..errors import InitpruneError
from ..masks import Mask
from ..models import create_model, model_options
from ..pruning import prune
from ..scores import get_criterion
from ..train import evaluate, train
from ..warmup import warmup_bn
from .cache import ScoreCache, cacheable, caching_scorer, score_key
from .config import ADDED_KEYS, RunConfig

logger = logging.getLogger(__name__)

RESULT = "result.json"
CONFIG = "config.yaml"
MASK = "mask.pt"
PRUNED_INIT = "pruned_init.pt"
METRICS = "metrics.jsonl"
PRUNING_INFO = "pruning.json"
DENSE = "dense"  # prune_after_training: the dense phase's folder


def _write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """metrics.jsonl: one JSON line per epoch."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InitpruneError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
    return device


def _claim_output(out: Path, config: RunConfig) -> None:
    """Write config.yaml, or check that an existing one describes the same run."""
    path = out / CONFIG
    settings = config.to_dict()
    if path.exists():
        previous = yaml.safe_load(path.read_text()) or {}
        # A key added since that file was written, at its default, describes the same run.
        previous = {**{k: v for k, v in ADDED_KEYS.items() if settings.get(k) == v}, **previous}
        same = {k: v for k, v in previous.items() if k not in ("out", "device")}
        ours = {k: v for k, v in settings.items() if k not in ("out", "device")}
        if json.dumps(same, sort_keys=True, default=str) != json.dumps(ours, sort_keys=True, default=str):
            changed = sorted(k for k in set(same) | set(ours) if same.get(k) != ours.get(k))
            raise InitpruneError(
                f"output folder {str(out)!r} holds a run with other settings "
                f"(differing: {', '.join(changed)}); choose another --out or remove it"
            )
        return
    atomic_write_text(path, yaml.safe_dump(settings, sort_keys=False))


def _build_model(config: RunConfig, num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    options = dict(config.model_options)
    if "image_size" in model_options(config.model) and "image_size" not in options:
        options["image_size"] = input_shape[-1]
    torch.manual_seed(config.seed)
    return create_model(config.model, num_classes=num_classes, in_channels=input_shape[0], **options)


def _stage(progress: bool, text: str) -> None:
    """One flushed line per stage where stdout is a log, not a terminal (bars show on a terminal)."""
    if progress and not sys.stdout.isatty():
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _prune(
    config: RunConfig,
    model: torch.nn.Module,
    splits: Any,
    out: Path,
    progress: bool,
    score_cache: str | Path | None = None,
) -> tuple[Mask, dict]:
    """Warm up, score and mask ``model`` (or restore both from an interrupted run)."""
    saved = from_main(_saved_pruning, out)  # rank 0's files, on every rank
    if saved is not None:
        state, info, mask = saved
        model.load_state_dict(state)
        return mask, info
    crit = get_criterion(config.criterion)
    crit.check_options(config.criterion_options)
    warmup_data = splits.loader(
        "train", batch_size=config.batch_size, shuffle=True, augment=False, seed=config.seed
    )
    batches = scoring_batches(
        splits, per_class=config.scoring_per_class, seed=config.seed, augment=config.scoring_augment
    )
    warmup_batches = 0 if config.prune_after_training else config.warmup_batches
    start = time.perf_counter()
    if warmup_batches != 0:
        warmup_bn(
            model, warmup_data, batches=warmup_batches, cumulative=config.warmup_cumulative, progress=progress
        )
    warmup_seconds = time.perf_counter() - start
    _stage(progress, f"warmup: {warmup_batches} batches, {warmup_seconds:.1f}s")
    start = time.perf_counter()
    scorer, cache_info = None, {}
    # PaT scores a trained network: its scores depend on the training settings the cache key leaves out
    if score_cache is not None and cacheable(config) and not config.prune_after_training:
        key = score_key(config, model_device(model))
        scorer, cache_info = caching_scorer(ScoreCache(score_cache), key, model_device(model))
    mask = prune(
        model,
        config.criterion,
        batches if crit.needs_data else None,
        sparsity=config.sparsity,
        rounds=config.rounds,
        scope=config.scope,
        warmup_batches=0,
        seed=config.seed,
        input_shape=tuple(splits.input_shape),
        include_classifier=config.include_classifier,
        exclude_first=config.exclude_first,
        shortcut_bn_scales=config.shortcut_bn_scales,
        round_schedule=config.round_schedule,
        include_attention=config.include_attention,
        scorer=scorer,
        **config.criterion_options,
    )
    if model_device(model).type == "cuda":
        torch.cuda.synchronize()
    info = {
        "warmup_seconds": warmup_seconds,
        # a cached scoring reports the time its computation took, and says it was cached
        "scoring_seconds": cache_info.get("seconds", time.perf_counter() - start),
        "criterion_options": {**crit.options, **config.criterion_options},
        "rounds": config.rounds or crit.default_rounds,
        "scoring_samples": config.scoring_per_class * splits.num_classes,
        "warmup_batches": warmup_batches,
    }
    if cache_info:
        info["scores_cached"] = cache_info["cached"]
    how = " (cached)" if cache_info.get("cached") else ""
    _stage(
        progress,
        f"scoring: {config.criterion} {info['scoring_seconds']:.1f}s{how}, sparsity {mask.sparsity:.4f}",
    )
    if is_main():
        mask.save(out / MASK)
        atomic_torch_save(model.state_dict(), out / PRUNED_INIT)
        atomic_write_json(out / PRUNING_INFO, info)
    return mask, info


def _saved_pruning(out: Path) -> tuple[dict[str, Any], dict, Mask] | None:
    """The pruned initialization, pruning.json and mask of an interrupted run, if all three were saved."""
    if (out / MASK).exists() and (out / PRUNED_INIT).exists() and (out / PRUNING_INFO).exists():
        state = torch.load(out / PRUNED_INIT, weights_only=True, map_location="cpu")
        return state, json.loads((out / PRUNING_INFO).read_text()), Mask.load(out / MASK)
    return None


def _finished_result(out: Path, config: RunConfig) -> dict[str, Any] | None:
    """The result of a finished run in ``out``; else None, after claiming the folder for ``config``."""
    if (out / RESULT).exists():
        _claim_output(out, config)
        logger.info("%s is finished; delete it to run again", out)
        return json.loads((out / RESULT).read_text())
    out.mkdir(parents=True, exist_ok=True)
    _claim_output(out, config)
    return None


def _train_dense(
    config: RunConfig,
    model: torch.nn.Module,
    train_loader: Any,
    val_loader: Any,
    test_loader: Any,
    folder: Path,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    """Prune after training, phase one: train ``model`` dense in place (resumable in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    trained = train(
        model,
        train_loader,
        config.train,
        val_loader=val_loader,
        checkpoint_dir=folder,
        device=device,
        progress=progress,
    )
    history = trained["history"]
    if is_main():
        _write_metrics(folder / METRICS, history)
    test = evaluate(model, test_loader, device=device)
    return {
        "dense_val_accuracy": history[-1].get("val_accuracy") if history else None,
        "dense_test_accuracy": test["accuracy"],
        "dense_train_seconds": sum(r.get("seconds") or 0.0 for r in history),
    }


def _best_on_test(history: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """The reference code's reported numbers: the first epoch of highest test accuracy, its test metrics."""
    best = max(history, key=lambda r: r["test_accuracy"])  # max() keeps the first of equal values
    return {
        "test_accuracy_selection": "best_epoch_on_test",
        "best_test_epoch": best["epoch"],
        "test_accuracy": best["test_accuracy"],
        "test_top5_accuracy": best.get("test_top5_accuracy"),
        "test_loss": best["test_loss"],
        "final_test_accuracy": final["accuracy"],
        "final_test_loss": final["loss"],
    }


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def run_experiment(
    config: RunConfig, *, progress: bool = True, score_cache: str | Path | None = None
) -> dict[str, Any]:
    """Run (or resume, or return the finished result of) the experiment ``config`` describes.

    ``score_cache``: a folder of scores shared with other runs (a sweep's ``score_cache``), used for
    single-round criteria (:mod:`initprune.experiments.cache`).

    Under torchrun every rank runs this: the ranks score their parts of the scoring samples, train one
    network with DistributedDataParallel on their shards of the data, and only rank 0 writes files.
    """
    out = Path(config.out or config.default_out())
    device = init_from_env(resolve_device(config.device))  # this rank's device under torchrun
    progress = progress and is_main()
    finished = from_main(_finished_result, out, config)
    if finished is not None:
        return finished

    splits = load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        val_size=config.val_size,
        seed=config.seed,
        device=device,
        **config.dataset_options,
    )
    _stage(progress, f"data: {config.dataset}, {splits.num_classes} classes, on {device}")
    model = _build_model(config, splits.num_classes, tuple(splits.input_shape)).to(device)
    train_loader = shard_loader(splits.loader("train", batch_size=config.batch_size, seed=config.seed))
    val_loader = shard_loader(splits.loader("val", batch_size=1024)) if splits.val is not None else None
    test_loader = shard_loader(splits.loader("test", batch_size=1024))
    dense: dict[str, Any] = {}
    if config.prune_after_training:
        loaders = (train_loader, val_loader, test_loader)
        dense = _train_dense(config, model, *loaders, out / DENSE, device, progress)
    mask, info = _prune(config, model, splits, out, progress, score_cache)

    metrics = out / METRICS
    history_so_far = (
        [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    )

    def record(epoch: dict[str, Any]) -> None:
        history_so_far[:] = [r for r in history_so_far if r["epoch"] < epoch["epoch"]] + [epoch]
        if is_main():
            _write_metrics(metrics, history_so_far)
        val = epoch.get("val_accuracy")
        _stage(
            progress,
            f"epoch {epoch['epoch']}: train loss {epoch['train_loss']:.4f}, "
            f"val accuracy {'n/a' if val is None else f'{val:.4f}'}",
        )

    start = time.perf_counter()
    trained = train(
        model,
        train_loader,
        config.train,
        mask=mask,
        val_loader=val_loader,
        checkpoint_dir=out,
        device=device,
        progress=progress,
        on_epoch_end=record,
        sync_batchnorm=config.sync_batchnorm,
        test_loader=test_loader if config.select_best_on_test else None,
    )
    history = trained["history"]
    if is_main():
        _write_metrics(metrics, history)
    train_seconds = sum(r.get("seconds") or 0.0 for r in history) or time.perf_counter() - start

    test = evaluate(model, test_loader, device=device)
    val = evaluate(model, val_loader, device=device) if val_loader is not None else {}
    named = dict(model.named_parameters())
    zeros_hold = all(bool((named[k].detach()[~mask[k].to(device)] == 0).all()) for k in mask)
    result = {
        "model": config.model,
        "dataset": config.dataset,
        "criterion": config.criterion,
        "criterion_options": info["criterion_options"],
        "temperature": info["criterion_options"].get("temperature"),
        "target_sparsity": config.sparsity,
        "sparsity": mask.sparsity,
        "density": mask.density,
        "scope": config.scope,
        "rounds": info["rounds"],
        "warmup_batches": info.get("warmup_batches", config.warmup_batches),
        "scoring_samples": info["scoring_samples"],
        "val_accuracy": val.get("accuracy"),
        "test_accuracy": test["accuracy"],
        "test_top5_accuracy": test.get("top5_accuracy"),
        "test_loss": test["loss"],
        "per_layer_density": mask.per_layer(),
        "collapsed_layers": mask.collapsed(),
        "disconnected_layers": disconnected_layers(model, mask, tuple(splits.input_shape)),
        "pruned_weights_stayed_zero": zeros_hold,
        "kept_weights": mask.num_kept,
        "prunable_weights": mask.num_total,
        "parameters": sum(p.numel() for p in model.parameters()),
        "warmup_seconds": info["warmup_seconds"],
        "scoring_seconds": info["scoring_seconds"],
        "scores_cached": info.get("scores_cached", False),
        "train_seconds": train_seconds,
        "epochs": config.epochs,
        "seed": config.seed,
        "device": str(device),
        "torch": torch.__version__,
        "out": str(out),
        "prune_after_training": config.prune_after_training,
        **dense,
        "test_accuracy_selection": "final_epoch",
    }
    if config.shortcut_bn_scales or config.round_schedule != "density":
        result.update(shortcut_bn_scales=config.shortcut_bn_scales, round_schedule=config.round_schedule)
    if config.select_best_on_test:
        result.update(_best_on_test(history, test))
    if is_main():
        atomic_write_json(out / RESULT, result)
    _stage(progress, f"result: test accuracy {result['test_accuracy']:.4f}, in {out}")
    barrier()  # every rank returns once result.json is there
    return result
