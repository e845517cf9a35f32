"""One complete pruning-at-initialization run, resumable, with every output written atomically.

The run folder (``--out``) holds:

- ``run.json``: the settings the run was made with and their hash, written once the run has started (after
  every check and after the data and model loaded). It decides which run the folder holds: a command with
  other settings is refused, naming the keys that differ.
- ``config.yaml``: the same settings for people to read and to reuse with ``--config``; editing it changes
  nothing about the folder.
- ``mask.pt``, ``pruned_init.pt`` (the pruned network before training) and ``pruning.json`` (scoring
  times and options): a run interrupted after scoring resumes from them.
- ``checkpoint.pt`` (after every epoch), ``metrics.jsonl`` (one line per epoch) and ``result.json``.

Every file but ``config.yaml`` carries the run's settings hash and is checked when read: a file of another
run is refused, and so is a corrupt one, each with what to do. A run holds an exclusive lock on its folder
while it works (``flock``, dropped on any exit, ``kill -9`` included), so two runs never write into one
folder. A finished run is not run again; an interrupted one resumes and ends as an uninterrupted one would.
Folders written before ``run.json`` existed (``config.yaml`` and files without a settings hash) are adopted:
their ``config.yaml`` is read once, keys it lacks meaning their defaults.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..atomic import (
    TEMP_SUFFIX,
    atomic_torch_save,
    atomic_write_text,
    remove_stale_temporaries,
)
from ..checkpoint import CHECKPOINT_NAME, checkpoint_settings_hash
from ..collapse import disconnected_layers
from ..data import check_dataset_settings, load_dataset, scoring_batches
from ..errors import InitpruneError
from ..masks import Mask
from ..models import create_model, model_options
from ..pruning import prune
from ..scores import get_criterion
from ..train import evaluate, train
from ..warmup import warmup_bn
from .config import RunConfig, differing_settings, yaml_problem

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

RESULT = "result.json"
CONFIG = "config.yaml"
RUN_FILE = "run.json"
MASK = "mask.pt"
PRUNED_INIT = "pruned_init.pt"
METRICS = "metrics.jsonl"
PRUNING_INFO = "pruning.json"
CHECKPOINT = CHECKPOINT_NAME
RUN_FORMAT = "initprune.run"
PRUNED_INIT_FORMAT = "initprune.pruned_init"

# What to do about a bad file, by file.
RECOMPUTE = "delete it and run the same command again to recompute it"
_REMEDY = {
    MASK: f"{RECOMPUTE} (scoring runs again, training resumes from its checkpoint)",
    PRUNED_INIT: f"{RECOMPUTE} (scoring runs again, training resumes from its checkpoint)",
    PRUNING_INFO: f"{RECOMPUTE} (scoring runs again, training resumes from its checkpoint)",
    METRICS: "delete it and run the same command again: it is written again from the checkpoint's history",
    RESULT: f"{RECOMPUTE} from the final checkpoint",
    CHECKPOINT: "delete it and run the same command again to train from the start of training",
    RUN_FILE: "the folder's record of its settings is lost: delete the folder or choose another --out",
    CONFIG: "the folder's record of its settings is lost: delete the folder or choose another --out",
}


@dataclass(frozen=True)
class FolderIdentity:
    """Which run a folder holds: its settings hash, whether ``run.json`` records it, and whether the
    folder was adopted from an earlier version (whose files carry no settings hash)."""

    settings_hash: str
    recorded: bool
    adopted: bool


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _corrupt(path: Path, why: str) -> InitpruneError:
    return InitpruneError(f"{str(path)!r} is corrupt ({why}); {_REMEDY.get(path.name, RECOMPUTE)}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise _corrupt(path, _first_line(exc)) from None
    except OSError as exc:
        raise InitpruneError(f"cannot read {str(path)!r}: {exc.strerror}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _corrupt(path, f"a JSON {type(value).__name__}, not an object")
    return value


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, overwritten, or not a torch file at all
        raise _corrupt(path, _first_line(exc)) from None


def _check_belongs(path: Path, found: Any, identity: FolderIdentity) -> None:
    """Refuse a file whose settings hash is not this run's (a file without one only in an adopted folder)."""
    if found == identity.settings_hash or (found is None and identity.adopted):
        return
    whose = "carries no settings hash" if found is None else f"belongs to another run (settings hash {found})"
    raise InitpruneError(
        f"{str(path)!r} {whose}, not to the run of this folder (settings hash {identity.settings_hash}): it "
        f"was copied or left here by another run; {RECOMPUTE}"
    )


def _write_metrics(path: Path, records: list[dict[str, Any]], settings_hash: str) -> None:
    """metrics.jsonl: one JSON line per epoch, each carrying the run's settings hash."""
    lines = [json.dumps({**r, "settings_hash": settings_hash}) + "\n" for r in records]
    atomic_write_text(path, "".join(lines))


def _read_metrics(path: Path, identity: FolderIdentity) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _corrupt(path, f"line {number} is not JSON: {exc}") from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise _corrupt(path, f"line {number} is not an epoch record")
        _check_belongs(path, record.pop("settings_hash", None), identity)
        records.append(record)
    return records


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
    options = model_options(config.model)
    unknown = sorted(set(config.model_options) - set(options))
    if unknown:
        raise InitpruneError(
            f"model {config.model!r} does not take option(s) {', '.join(map(repr, unknown))}; its options: "
            f"{', '.join(options) or 'none'}"
        )
    check_dataset_settings(config.dataset, config.data_dir, config.val_size, **dict(config.dataset_options))
    resolve_device(config.device)


# ---------------------------------------------------------------- the folder: identity, lock, checks


def _recorded_settings(out: Path) -> tuple[dict[str, Any], str | None, bool, str] | None:
    """(settings, their hash or None, adopted, file) as the folder records them; None if it records none."""
    if (out / RUN_FILE).exists():
        path = out / RUN_FILE
        payload = _read_json(path)
        settings, recorded_hash = payload.get("settings"), payload.get("settings_hash")
        if payload.get("format") != RUN_FORMAT or not isinstance(settings, dict) or not recorded_hash:
            raise _corrupt(path, "not a run record")
        return settings, str(recorded_hash), bool(payload.get("adopted", False)), RUN_FILE
    if (out / CONFIG).exists():  # a folder of an earlier version: adopt it
        path = out / CONFIG
        try:
            settings = yaml.safe_load(_read_text(path))
        except yaml.YAMLError as exc:
            raise _corrupt(path, f"not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(settings, dict):
            raise _corrupt(path, "not a mapping of settings")
        return settings, None, True, CONFIG
    return None


def check_identity(out: Path, config: RunConfig) -> FolderIdentity | None:
    """The run the folder ``out`` holds, which must be the run ``config`` describes; None if no run has
    claimed the folder yet. Different settings are refused, naming the keys that differ."""
    recorded = _recorded_settings(out)
    if recorded is None:
        return None
    settings, recorded_hash, adopted, source = recorded
    ours = config.to_dict()
    changed = differing_settings(settings, ours)
    if changed:
        details = ", ".join(f"{k} {settings.get(k, '(default)')!r} -> {ours.get(k)!r}" for k in changed)
        raise InitpruneError(
            f"output folder {str(out)!r} holds a run with other settings (differing: {', '.join(changed)}) "
            f"[its {source} -> this command: {details}]; choose another --out or remove it"
        )
    return FolderIdentity(recorded_hash or config.settings_hash(), recorded_hash is not None, adopted)


def _record_identity(out: Path, config: RunConfig, identity: FolderIdentity) -> None:
    """Write run.json (the folder's identity) unless it is there, then config.yaml for people unless it is
    there (an adopted folder's stays as it was)."""
    if not identity.recorded:
        payload = {
            "format": RUN_FORMAT,
            "version": 1,
            "settings_hash": identity.settings_hash,
            "adopted": identity.adopted,
            "settings": config.to_dict(),
        }
        atomic_write_text(out / RUN_FILE, json.dumps(payload, indent=2, default=str) + "\n")
    if not (out / CONFIG).exists():
        atomic_write_text(out / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))


@contextlib.contextmanager
def lock_folder(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder ``out`` for the duration of the block.

    The lock is ``flock`` on the folder itself (no lock file to leave behind); the kernel drops it when the
    process ends in any way, ``kill -9`` included. A folder another process holds is refused at once."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = None
    for _ in range(3):
        try:
            fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:  # a run that failed before writing anything removed it: make it again
            out.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InitpruneError(
                f"output folder {str(out)!r} is in use by another run (which holds its lock); wait for it "
                "to end, or choose another --out"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise InitpruneError(f"cannot lock output folder {str(out)!r}: {exc.strerror}") from None
        # The folder may have been removed and made again between the open and the lock: lock the new one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(out))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
        fd = None
    if fd is None:
        raise InitpruneError(f"output folder {str(out)!r} keeps being removed and made again; cannot lock it")
    try:
        yield
    finally:
        os.close(fd)  # drops the lock


def _check_writable(out: Path) -> None:
    """Fail at the start, not after an epoch, when nothing can be written into ``out``."""
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-probe.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InitpruneError(
            f"output folder {str(out)!r} is not writable ({exc.strerror}); fix its permissions or choose "
            "another --out"
        ) from None


def _make_folder(out: Path) -> bool:
    """Make ``out`` (and its parents); True if it did not exist before."""
    if out.exists() and not out.is_dir():
        raise InitpruneError(f"--out {str(out)!r} is a file, not a folder; choose another --out")
    existed = out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InitpruneError(f"cannot make output folder {str(out)!r}: {exc.strerror}") from None
    return not existed


def _finished_result(out: Path, config: RunConfig) -> dict[str, Any]:
    """The stored result of the finished run in ``out``, after checking that it is this run's."""
    identity = check_identity(out, config)
    if identity is None:
        raise InitpruneError(
            f"{str(out / RESULT)!r} lies in a folder that does not record its run (no {RUN_FILE} or "
            f"{CONFIG}): it may be another run's; delete it or choose another --out"
        )
    result = _read_json(out / RESULT)
    _check_belongs(out / RESULT, result.get("settings_hash"), identity)
    logger.info("%s is finished; delete it to run again", out)
    return result


def _build_model(config: RunConfig, num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    options = dict(config.model_options)
    if "image_size" in model_options(config.model) and "image_size" not in options:
        options["image_size"] = input_shape[-1]
    torch.manual_seed(config.seed)
    return create_model(config.model, num_classes=num_classes, in_channels=input_shape[0], **options)


def _restore_pruning(out: Path, model: torch.nn.Module, identity: FolderIdentity) -> tuple[Mask, dict] | None:
    """The mask and pruning info of an interrupted run (the model gets its pruned initialization), or None
    when scoring has to run (again)."""
    if not all((out / name).exists() for name in (MASK, PRUNED_INIT, PRUNING_INFO)):
        return None
    payload = _read_torch(out / MASK)
    _check_belongs(out / MASK, payload.get("settings_hash") if isinstance(payload, dict) else None, identity)
    mask = Mask.load(out / MASK)
    init = _read_torch(out / PRUNED_INIT)
    if isinstance(init, dict) and init.get("format") == PRUNED_INIT_FORMAT:
        _check_belongs(out / PRUNED_INIT, init.get("settings_hash"), identity)
        state = init.get("model")
    else:  # an earlier version's plain state dict
        _check_belongs(out / PRUNED_INIT, None, identity)
        state = init
    if not isinstance(state, dict):
        raise _corrupt(out / PRUNED_INIT, "it holds no model state")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise _corrupt(out / PRUNED_INIT, f"it does not fit the model: {_first_line(exc)}") from None
    info = _read_json(out / PRUNING_INFO)
    _check_belongs(out / PRUNING_INFO, info.pop("settings_hash", None), identity)
    return mask, info


def _prune(
    config: RunConfig,
    model: torch.nn.Module,
    splits: Any,
    out: Path,
    progress: bool,
    identity: FolderIdentity,
) -> tuple[Mask, dict]:
    """Warm up, score and mask ``model`` (or restore both from an interrupted run)."""
    restored = _restore_pruning(out, model, identity)
    if restored is not None:
        return restored
    crit = get_criterion(config.criterion)
    crit.check_options(config.criterion_options)
    warmup_data = splits.loader(
        "train", batch_size=config.batch_size, shuffle=True, augment=False, seed=config.seed
    )
    batches = scoring_batches(
        splits, per_class=config.scoring_per_class, seed=config.seed, augment=config.scoring_augment
    )
    warmup_batches = config.warmup_batches
    start = time.perf_counter()
    if warmup_batches != 0:
        warmup_bn(
            model, warmup_data, batches=warmup_batches, cumulative=config.warmup_cumulative, progress=progress
        )
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
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
        **config.criterion_options,
    )
    if model_device(model).type == "cuda":
        torch.cuda.synchronize()
    info = {
        "warmup_seconds": warmup_seconds,
        "scoring_seconds": time.perf_counter() - start,
        "criterion_options": {**crit.options, **config.criterion_options},
        "rounds": config.rounds or crit.default_rounds,
        "scoring_samples": config.scoring_per_class * splits.num_classes,
    }
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


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def run_experiment(config: RunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume, or return the finished result of) the experiment ``config`` describes.

    Everything that can be checked is checked before anything is written (see :func:`validate_config`);
    the folder's identity is written only once the data and model are loaded, so a command that fails
    before leaves nothing a rerun would trust (and removes the folder it made)."""
    out = Path(config.out or config.default_out())
    if out.exists() and not out.is_dir():
        raise InitpruneError(f"--out {str(out)!r} is a file, not a folder; choose another --out")
    if (out / RESULT).exists():  # finished: nothing is read but the folder's record and its result
        return _finished_result(out, config)
    validate_config(config)
    created = _make_folder(out)
    with lock_folder(out):
        started = False
        try:
            _check_writable(out)
            if (out / RESULT).exists():  # finished by another process in the meantime
                return _finished_result(out, config)
            identity = check_identity(out, config)
            remove_stale_temporaries(out)
            device = resolve_device(config.device)
            splits = load_dataset(
                config.dataset,
                data_dir=config.data_dir,
                val_size=config.val_size,
                seed=config.seed,
                device=device,
                **config.dataset_options,
            )
            model = _build_model(config, splits.num_classes, tuple(splits.input_shape)).to(device)
            if identity is None:
                identity = FolderIdentity(config.settings_hash(), recorded=False, adopted=False)
            _record_identity(out, config, identity)
            started = True
            return _run(config, out, identity, splits, model, device, progress)
        except BaseException:
            if created and not started:  # under the lock, so no other run is writing into it
                with contextlib.suppress(OSError):
                    out.rmdir()  # only if empty: nothing was written
            raise


def _run(
    config: RunConfig,
    out: Path,
    identity: FolderIdentity,
    splits: Any,
    model: torch.nn.Module,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    """Score (or restore the mask), train (or resume), evaluate and write result.json."""
    mask, info = _prune(config, model, splits, out, progress, identity)

    train_loader = splits.loader("train", batch_size=config.batch_size, seed=config.seed)
    val_loader = splits.loader("val", batch_size=1024) if splits.val is not None else None

    metrics = out / METRICS
    history_so_far = _read_metrics(metrics, identity) if metrics.exists() else []
    if (out / CHECKPOINT).exists():
        _check_belongs(out / CHECKPOINT, checkpoint_settings_hash(out / CHECKPOINT), identity)

    def record(epoch: dict[str, Any]) -> None:
        history_so_far[:] = [r for r in history_so_far if r["epoch"] < epoch["epoch"]] + [epoch]
        _write_metrics(metrics, history_so_far, identity.settings_hash)

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
        settings_hash=identity.settings_hash,
    )
    history = trained["history"]
    _write_metrics(metrics, history, identity.settings_hash)
    train_seconds = sum(r.get("seconds") or 0.0 for r in history) or time.perf_counter() - start

    test = evaluate(model, splits.loader("test", batch_size=1024), device=device)
    val = evaluate(model, val_loader, device=device) if val_loader is not None else {}
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
        "warmup_batches": config.warmup_batches,
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
        "train_seconds": train_seconds,
        "epochs": config.epochs,
        "seed": config.seed,
        "device": str(device),
        "torch": torch.__version__,
        "out": str(out),
        "settings_hash": identity.settings_hash,
    }
    atomic_write_text(out / RESULT, json.dumps(result, indent=2) + "\n")
    return result
