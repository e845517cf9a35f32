"""One complete pruning-at-initialization run, resumable, with every output written atomically.

The run folder (``--out``) holds ``run.json`` (the settings the run was made with and their hash, written
once the run has started), ``config.yaml`` (the same settings for people to read and reuse; editing it
changes nothing), ``mask.pt``, ``pruned_init.pt`` and ``pruning.json`` (the mask, the pruned network before
training, scoring times and options: a run interrupted after scoring resumes from them), ``checkpoint.pt``
(after every epoch), ``metrics.jsonl`` (one line per epoch) and ``result.json``. A finished run is not run
again; an interrupted one resumes and ends as an uninterrupted one would. Which run a folder holds, its
lock and the checks of its files: :mod:`initprune.experiments.folder`.

With ``prune_after_training`` (PaT, the reference pruning at initialization is measured against) the
network is first trained dense for ``epochs`` in ``dense/`` (its own ``checkpoint.pt`` and
``metrics.jsonl``), then the trained network is scored by ``criterion`` and pruned at ``sparsity`` with
no BatchNorm warmup (its statistics are already those of the trained network), and the pruned trained
weights are retrained with the mask for ``epochs`` more, with a fresh optimizer and the same schedule
(no rewinding to the initialization). ``mask.pt`` and ``pruned_init.pt`` then hold the mask and the
pruned trained network. Both phases resume.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from ..allocation import read_layer_densities
from ..atomic import atomic_torch_save, atomic_write_text, remove_stale_temporaries
from ..checkpoint import checkpoint_settings_hash
from ..collapse import disconnected_layers
from ..data import check_dataset_settings, load_dataset, scoring_batches
from ..data.registry import REGISTRY as DATASETS
from ..distributed import (
    barrier,
    broadcast_state,
    follow,
    from_main,
    init_from_env,
    is_main,
    launched_by_torchrun,
    lead,
    shard_loader,
)
from ..errors import InitpruneError
from ..masks import Mask
from ..models import check_model_options, create_model, get_model, model_options, models
from ..progress import stage_line
from ..pruning import prune
from ..scores import get_criterion
from ..train import evaluate, train
from ..warmup import warmup_bn
from .cache import ScoreCache, cacheable, caching_scorer, probe_generator, score_key
from .config import RunConfig
from .folder import (
    CHECKPOINT,
    MASK,
    METRICS,
    PRUNED_INIT,
    PRUNED_INIT_FORMAT,
    PRUNING_INFO,
    RESULT,
    FolderIdentity,
    check_belongs,
    check_identity,
    check_writable,
    corrupt,
    finished_result,
    first_line,
    lock_folder,
    make_folder,
    read_json,
    read_metrics,
    read_torch,
    record_identity,
    write_metrics,
)
from .folder import CONFIG as CONFIG  # re-exported: the run folder's file names live in folder.py
from .folder import RUN_FILE as RUN_FILE

logger = logging.getLogger(__name__)

DENSE = "dense"  # prune_after_training: the dense phase's folder


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InitpruneError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
    return device


def validate_config(config: RunConfig) -> None:
    """Check everything a run of ``config`` would otherwise fail on after it started, without reading
    data or building a model: the criterion and its options, the model and its option names, the dataset,
    its option names, a given data folder and ``val_size`` (where the training set's size is known), and
    the device. Raises :class:`~initprune.errors.InitpruneError` naming the bad value."""
    get_criterion(config.criterion).check_options(dict(config.criterion_options))
    check_model_options(config.model, config.model_options)
    check_dataset_settings(config.dataset, config.data_dir, config.val_size, **dict(config.dataset_options))
    if config.layer_densities is not None:
        if config.rounds is None and get_criterion(config.criterion).default_rounds != 1:
            raise InitpruneError(
                f"layer_densities make a one-shot mask, but {config.criterion} prunes in "
                f"{get_criterion(config.criterion).default_rounds} rounds by default; set rounds: 1"
            )
        read_layer_densities(config.layer_densities)  # exists, readable, densities in [0, 1]
    if config.scoring_redraw and launched_by_torchrun():
        raise InitpruneError("scoring_redraw runs in one process only (every rank would draw its own views)")
    takes, holds = get_model(config.model).inputs, DATASETS[config.dataset].inputs
    if takes != holds:
        fits = ", ".join(name for name in models() if get_model(name).inputs == holds)
        raise InitpruneError(
            f"model {config.model!r} takes {takes} but dataset {config.dataset!r} holds {holds}; models for "
            f"{holds}: {fits}"
        )
    resolve_device(config.device)


def _build_model(config: RunConfig, num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    options = dict(config.model_options)
    if "image_size" in model_options(config.model) and "image_size" not in options:
        options["image_size"] = input_shape[-1]
    torch.manual_seed(config.seed)
    channels = 1 if get_model(config.model).inputs == "tokens" else input_shape[0]
    return create_model(config.model, num_classes=num_classes, in_channels=channels, **options)


def _restore_pruning(out: Path, model: torch.nn.Module, identity: FolderIdentity) -> tuple[Mask, dict] | None:
    """The mask and pruning info of an interrupted run (the model gets its pruned initialization), or None
    when scoring has to run (again)."""
    if not all((out / name).exists() for name in (MASK, PRUNED_INIT, PRUNING_INFO)):
        return None
    payload = read_torch(out / MASK)
    check_belongs(out / MASK, payload.get("settings_hash") if isinstance(payload, dict) else None, identity)
    mask = Mask.load(out / MASK)
    init = read_torch(out / PRUNED_INIT)
    if isinstance(init, dict) and init.get("format") == PRUNED_INIT_FORMAT:
        check_belongs(out / PRUNED_INIT, init.get("settings_hash"), identity)
        state = init.get("model")
    else:  # an earlier version's plain state dict
        check_belongs(out / PRUNED_INIT, None, identity)
        state = init
    if not isinstance(state, dict):
        raise corrupt(out / PRUNED_INIT, "it holds no model state")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise corrupt(out / PRUNED_INIT, f"it does not fit the model: {first_line(exc)}") from None
    info = read_json(out / PRUNING_INFO)
    check_belongs(out / PRUNING_INFO, info.pop("settings_hash", None), identity)
    return mask, info


def _stage(progress: bool, text: str) -> None:
    """One flushed line per stage, on a terminal (above the bars) and in a log alike."""
    stage_line(text, enabled=progress)


def pruning_data(config: RunConfig, splits: Any) -> tuple[Any, list]:
    """(the BatchNorm warmup's loader, the scoring batches) of ``config``'s run on ``splits``: the data
    every warmup and every scoring round of the run sees."""
    warmup_data = splits.loader(
        "train",
        batch_size=config.batch_size,
        shuffle=config.warmup_shuffle,
        augment=config.warmup_augment,
        seed=config.seed,
    )
    batches = scoring_batches(
        splits,
        per_class=config.scoring_per_class,
        seed=config.seed,
        augment=config.scoring_augment,
        redraw=config.scoring_redraw,
        sequences=config.scoring_sequences,
    )
    return warmup_data, batches


def _prune(
    config: RunConfig,
    model: torch.nn.Module,
    splits: Any,
    out: Path,
    progress: bool,
    identity: FolderIdentity,
    score_cache: str | Path | None = None,
) -> tuple[Mask, dict]:
    """Warm up, score and mask ``model`` (or restore both from an interrupted run)."""
    restored = from_main(_restore_pruning, out, model, identity)  # rank 0 reads, every rank gets it
    if restored is not None:
        broadcast_state(model)  # the pruned initialization rank 0 loaded
        _stage(progress, f"scoring skipped: the mask from {MASK}, sparsity {restored[0].sparsity:.4f}")
        return restored
    crit = get_criterion(config.criterion)
    crit.check_options(config.criterion_options)
    warmup_data, batches = pruning_data(config, splits)
    warmup_batches = 0 if config.prune_after_training else config.warmup_batches
    densities = None if config.layer_densities is None else read_layer_densities(config.layer_densities)
    start = time.perf_counter()
    used = 0
    if warmup_batches != 0:
        used = warmup_bn(
            model, warmup_data, batches=warmup_batches, cumulative=config.warmup_cumulative, progress=progress
        )
    warmup_seconds = time.perf_counter() - start
    _stage(progress, f"warmup: {used} batches, {warmup_seconds:.1f}s")
    samples = sum(len(b[1]) for b in batches) if crit.needs_data else 0
    _stage(progress, f"scoring: {config.criterion}" + (f" on {samples} samples" if samples else ""))
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
        seed=config.scoring_seed,
        input_shape=tuple(splits.input_shape),
        include_classifier=config.include_classifier,
        exclude_first=config.exclude_first,
        shortcut_bn_scales=config.shortcut_bn_scales,
        round_schedule=config.round_schedule,
        round_warmup_batches=warmup_batches if config.round_warmup else 0,
        warmup_data=warmup_data,
        warmup_cumulative=config.warmup_cumulative,
        include_attention=config.include_attention,
        scorer=scorer,
        layer_densities=densities,
        loss=config.loss,
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
        "scoring_samples": sum(int(x.shape[0]) for x, _ in batches),
        "warmup_batches": warmup_batches,
    }
    if probe_generator(config.criterion) is not None:
        info["probe_generator"] = probe_generator(config.criterion)
    if cache_info:
        info["scores_cached"] = cache_info["cached"]
    if densities is not None:
        info["layer_densities_given"] = densities
    how = (
        f"scores from the cache (computed in {info['scoring_seconds']:.1f}s)"
        if cache_info.get("cached")
        else f"{info['scoring_seconds']:.1f}s"
    )
    _stage(progress, f"scored: {config.criterion} {how}, sparsity {mask.sparsity:.4f}")
    if not is_main():  # under torchrun rank 0 alone writes
        return mask, info
    # pruning.json last: the three files are used only when all are there.
    mask.save(out / MASK, settings_hash=identity.settings_hash)
    init = {
        "format": PRUNED_INIT_FORMAT,
        "version": 1,
        "settings_hash": identity.settings_hash,
        "model": model.state_dict(),
    }
    atomic_torch_save(init, out / PRUNED_INIT)
    atomic_write_text(
        out / PRUNING_INFO, json.dumps({**info, "settings_hash": identity.settings_hash}, indent=2) + "\n"
    )
    return mask, info


@functools.cache
def source_commit() -> str | None:
    """The git commit of the initprune source a run used (with ``+dirty`` where it has uncommitted
    changes), or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", str(here.parent)],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _train_dense(
    config: RunConfig,
    model: torch.nn.Module,
    loaders: tuple[Any, Any, Any],
    folder: Path,
    identity: FolderIdentity,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    """Prune after training, phase one: train ``model`` dense in place (resumable in ``folder``)."""
    train_loader, val_loader, test_loader = loaders
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder)
    trained = train(
        model,
        train_loader,
        config.train,
        val_loader=val_loader,
        checkpoint_dir=folder,
        device=device,
        progress=progress,
        on_resume=lambda done, total: _stage(progress, f"dense phase: resuming from epoch {done} of {total}"),
        settings_hash=identity.settings_hash,
        sync_batchnorm=config.sync_batchnorm,
    )
    history = trained["history"]
    if is_main():
        write_metrics(folder / METRICS, history, identity.settings_hash)
    test = evaluate(model, test_loader, device=device, loss=config.loss)
    _stage(progress, f"dense phase: test accuracy {test['accuracy']:.4f}")
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


def run_experiment(
    config: RunConfig, *, progress: bool = True, score_cache: str | Path | None = None
) -> dict[str, Any]:
    """Run (or resume, or return the finished result of) the experiment ``config`` describes.

    ``score_cache``: a folder of scores shared with other runs (a sweep's ``score_cache``), used for
    single-round criteria (:mod:`initprune.experiments.cache`).

    Everything that can be checked is checked before anything is written (see :func:`validate_config`);
    the folder's identity is written only once the data and model are loaded, so a command that fails
    before leaves nothing a rerun would trust (and removes the folder it made).

    Under torchrun every rank calls it: rank 0 alone keeps the folder (its lock, identity and files) and
    tells the others whether and which run to make; then the ranks score their parts of the scoring
    samples and train one network with DistributedDataParallel on their shards of the data."""
    source_commit()  # read now, while it is the commit of the code this process imported
    out = Path(config.out or config.default_out())
    device = None
    if launched_by_torchrun():  # this rank's device, in the process group
        device = init_from_env(resolve_device(config.device))
    if not is_main():
        return _follow(config, out, device, score_cache)
    with lead() as tell:
        return _lead(config, out, device, progress, tell, score_cache)


def _data_and_model(config: RunConfig, device: torch.device) -> tuple[Any, torch.nn.Module]:
    """The run's dataset splits and its freshly initialized model on ``device`` (the same on every rank)."""
    splits = load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        val_size=config.val_size,
        seed=config.seed,
        device=device,
        **config.dataset_options,
    )
    return splits, _build_model(config, splits.num_classes, tuple(splits.input_shape)).to(device)


def _follow(
    config: RunConfig, out: Path, device: torch.device | None, score_cache: str | Path | None
) -> dict[str, Any]:
    """A rank other than 0 under torchrun: rank 0's finished result, or its run made together."""
    told = follow()
    if not isinstance(told, FolderIdentity):
        return told
    assert device is not None
    splits, model = _data_and_model(config, device)
    return _run(config, out, told, splits, model, device, False, score_cache)


def _lead(
    config: RunConfig,
    out: Path,
    device: torch.device | None,
    progress: bool,
    tell: Any,
    score_cache: str | Path | None,
) -> dict[str, Any]:
    """The run as one process makes it; under torchrun, rank 0's part, telling the others the decision."""
    if out.exists() and not out.is_dir():
        raise InitpruneError(f"--out {str(out)!r} is a file, not a folder; choose another --out")
    if (out / RESULT).exists():  # finished: nothing is read but the folder's record and its result
        return tell(_finished(out, config, progress))
    validate_config(config)
    created = make_folder(out)
    with lock_folder(out):
        started = False
        try:
            check_writable(out)
            if (out / RESULT).exists():  # finished by another process in the meantime
                return tell(_finished(out, config, progress))
            identity = check_identity(out, config)
            remove_stale_temporaries(out)
            device = resolve_device(config.device) if device is None else device
            splits, model = _data_and_model(config, device)
            _stage(progress, f"data: {config.dataset}, {splits.num_classes} classes, on {device}")
            if identity is None:
                identity = FolderIdentity(config.settings_hash(), recorded=False, adopted=False)
            record_identity(out, config, identity)
            started = True
            tell(identity)  # under torchrun, the other ranks start the same run
            return _run(config, out, identity, splits, model, device, progress, score_cache)
        except BaseException:
            if created and not started:  # under the lock, so no other run is writing into it
                with contextlib.suppress(OSError):
                    out.rmdir()  # only if empty: nothing was written
            raise


def _finished(out: Path, config: RunConfig, progress: bool) -> dict[str, Any]:
    result = finished_result(out, config)
    _stage(progress, f"already finished: test accuracy {result['test_accuracy']:.4f}, in {out}")
    return result


def _run(
    config: RunConfig,
    out: Path,
    identity: FolderIdentity,
    splits: Any,
    model: torch.nn.Module,
    device: torch.device,
    progress: bool,
    score_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Score (or restore the mask), train (or resume), evaluate and write result.json."""
    train_loader = shard_loader(
        splits.loader(
            "train", batch_size=config.batch_size, shuffle=config.train_shuffle, seed=config.training_seed
        )
    )
    val_loader = shard_loader(splits.loader("val", batch_size=1024)) if splits.val is not None else None
    test_loader = shard_loader(splits.loader("test", batch_size=1024))
    dense: dict[str, Any] = {}
    if config.prune_after_training:
        loaders = (train_loader, val_loader, test_loader)
        dense = _train_dense(config, model, loaders, out / DENSE, identity, device, progress)
    mask, info = _prune(config, model, splits, out, progress, identity, score_cache)

    metrics = out / METRICS
    history_so_far = read_metrics(metrics, identity) if is_main() and metrics.exists() else []
    if is_main() and (out / CHECKPOINT).exists():
        check_belongs(out / CHECKPOINT, checkpoint_settings_hash(out / CHECKPOINT), identity)

    def record(epoch: dict[str, Any]) -> None:
        history_so_far[:] = [r for r in history_so_far if r["epoch"] < epoch["epoch"]] + [epoch]
        if is_main():
            write_metrics(metrics, history_so_far, identity.settings_hash)
        key = "val_perplexity" if "val_perplexity" in epoch else "val_accuracy"
        val = epoch.get(key)
        _stage(
            progress,
            f"epoch {epoch['epoch']}: train loss {epoch['train_loss']:.4f}, "
            f"{key.replace('_', ' ')} {'n/a' if val is None else f'{val:.4f}'}",
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
        on_resume=lambda epoch, epochs: _stage(progress, f"resuming from epoch {epoch} of {epochs}"),
        settings_hash=identity.settings_hash,
        sync_batchnorm=config.sync_batchnorm,
        test_loader=test_loader if config.select_best_on_test else None,
    )
    history = trained["history"]
    if is_main():
        write_metrics(metrics, history, identity.settings_hash)
    train_seconds = sum(r.get("seconds") or 0.0 for r in history) or time.perf_counter() - start

    sets = "test and validation sets" if val_loader is not None else "test set"
    _stage(progress, f"evaluating: the final network on the {sets}")
    test = evaluate(model, test_loader, device=device, loss=config.loss)
    val = evaluate(model, val_loader, device=device, loss=config.loss) if val_loader is not None else {}
    tokens = get_model(config.model).inputs == "tokens"
    named = dict(model.named_parameters())
    zeros_hold = all(bool((named[k].detach()[~mask[k].to(device)] == 0).all()) for k in mask)
    result = {
        "model": config.model,
        "dataset": config.dataset,
        "data_dir": None if splits.root is None else str(splits.root),
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
        # the path count feeds a real all-ones input: token models get their empty layers only
        "disconnected_layers": mask.collapsed()
        if tokens
        else disconnected_layers(model, mask, tuple(splits.input_shape)),
        "pruned_weights_stayed_zero": zeros_hold,
        "kept_weights": mask.num_kept,
        "prunable_weights": mask.num_total,
        "parameters": sum(p.numel() for p in model.parameters()),
        "warmup_seconds": info["warmup_seconds"],
        "scoring_seconds": info["scoring_seconds"],
        "scores_cached": info.get("scores_cached", False),
        "train_seconds": train_seconds,
        "epochs": config.epochs,
        "lr_warmup_steps": trained["lr_warmup_steps"],
        "seed": config.seed,
        "train_seed": config.training_seed,
        "probe_seed": config.scoring_seed,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "commit": source_commit(),
        "out": str(out),
        "settings_hash": identity.settings_hash,
        "prune_after_training": config.prune_after_training,
        **dense,
        "test_accuracy_selection": "final_epoch",
    }
    if config.loss != "cross_entropy":
        # per token: loss in nats, perplexity exp(loss), bits per byte loss / ln 2, next-token accuracy
        result["loss"] = config.loss
        result["val_loss"] = val.get("loss")
        for split, values in (("val", val), ("test", test)):
            result[f"{split}_perplexity"] = values.get("perplexity")
            result[f"{split}_bits_per_byte"] = values.get("bits_per_byte")
    if config.shortcut_bn_scales or config.round_schedule != "density":
        result.update(shortcut_bn_scales=config.shortcut_bn_scales, round_schedule=config.round_schedule)
    if config.round_warmup:
        result["round_warmup"] = True
    if config.layer_densities is not None:
        result.update(
            layer_densities_source=config.layer_densities,
            layer_densities_given=info.get("layer_densities_given"),
        )
    if config.select_best_on_test:
        result.update(_best_on_test(history, test))
    if is_main():
        atomic_write_text(out / RESULT, json.dumps(result, indent=2) + "\n")
    headline = "test_perplexity" if "test_perplexity" in result else "test_accuracy"
    _stage(progress, f"result: {headline.replace('_', ' ')} {result[headline]:.4f}, in {out}")
    barrier()  # every rank returns once result.json is there
    return result
