"""A run's folder: which run it holds, the lock that keeps other runs out, and reading its files safely.

``run.json`` records the settings a run was made with and their hash (the run's identity); every other
file but ``config.yaml`` carries that hash and is checked when read, so a file of another run is refused
and a corrupt one is named with what to do. Folders written before ``run.json`` existed are adopted:
their ``config.yaml`` is read once, keys it lacks meaning their defaults, and their files, which carry no
hash, are accepted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..atomic import TEMP_SUFFIX, atomic_write_text
from ..checkpoint import CHECKPOINT_NAME
from ..errors import InitpruneError
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


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def corrupt(path: Path, why: str) -> InitpruneError:
    return InitpruneError(f"{str(path)!r} is corrupt ({why}); {_REMEDY.get(path.name, RECOMPUTE)}")


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise corrupt(path, first_line(exc)) from None
    except OSError as exc:
        raise InitpruneError(f"cannot read {str(path)!r}: {exc.strerror}") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise corrupt(path, f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise corrupt(path, f"a JSON {type(value).__name__}, not an object")
    return value


def read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, overwritten, or not a torch file at all
        raise corrupt(path, first_line(exc)) from None


def check_belongs(path: Path, found: Any, identity: FolderIdentity) -> None:
    """Refuse a file whose settings hash is not this run's (a file without one only in an adopted folder)."""
    if found == identity.settings_hash or (found is None and identity.adopted):
        return
    whose = "carries no settings hash" if found is None else f"belongs to another run (settings hash {found})"
    raise InitpruneError(
        f"{str(path)!r} {whose}, not to the run of this folder (settings hash {identity.settings_hash}): it "
        f"was copied or left here by another run; {RECOMPUTE}"
    )


def write_metrics(path: Path, records: list[dict[str, Any]], settings_hash: str) -> None:
    """metrics.jsonl: one JSON line per epoch, each carrying the run's settings hash."""
    lines = [json.dumps({**r, "settings_hash": settings_hash}) + "\n" for r in records]
    atomic_write_text(path, "".join(lines))


def read_metrics(path: Path, identity: FolderIdentity) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise corrupt(path, f"line {number} is not JSON: {exc}") from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise corrupt(path, f"line {number} is not an epoch record")
        check_belongs(path, record.pop("settings_hash", None), identity)
        records.append(record)
    return records


def recorded_settings(out: Path) -> tuple[dict[str, Any], str | None, bool, str] | None:
    """(settings, their hash or None, adopted, file) as the folder records them; None if it records none."""
    if (out / RUN_FILE).exists():
        path = out / RUN_FILE
        payload = read_json(path)
        settings, recorded_hash = payload.get("settings"), payload.get("settings_hash")
        if payload.get("format") != RUN_FORMAT or not isinstance(settings, dict) or not recorded_hash:
            raise corrupt(path, "not a run record")
        return settings, str(recorded_hash), bool(payload.get("adopted", False)), RUN_FILE
    if (out / CONFIG).exists():  # a folder of an earlier version: adopt it
        path = out / CONFIG
        try:
            settings = yaml.safe_load(read_text(path))
        except yaml.YAMLError as exc:
            raise corrupt(path, f"not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(settings, dict):
            raise corrupt(path, "not a mapping of settings")
        return settings, None, True, CONFIG
    return None


def check_identity(out: Path, config: RunConfig) -> FolderIdentity | None:
    """The run the folder ``out`` holds, which must be the run ``config`` describes; None if no run has
    claimed the folder yet. Different settings are refused, naming the keys that differ."""
    recorded = recorded_settings(out)
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


def record_identity(out: Path, config: RunConfig, identity: FolderIdentity) -> None:
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


def check_writable(out: Path) -> None:
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


def make_folder(out: Path) -> bool:
    """Make ``out`` (and its parents); True if it did not exist before."""
    if out.exists() and not out.is_dir():
        raise InitpruneError(f"--out {str(out)!r} is a file, not a folder; choose another --out")
    existed = out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InitpruneError(f"cannot make output folder {str(out)!r}: {exc.strerror}") from None
    return not existed


def finished_result(out: Path, config: RunConfig) -> dict[str, Any]:
    """The stored result of the finished run in ``out``, after checking that it is this run's."""
    identity = check_identity(out, config)
    if identity is None:
        raise InitpruneError(
            f"{str(out / RESULT)!r} lies in a folder that does not record its run (no {RUN_FILE} or "
            f"{CONFIG}): it may be another run's; delete it or choose another --out"
        )
    result = read_json(out / RESULT)
    check_belongs(out / RESULT, result.get("settings_hash"), identity)
    logger.info("%s is finished; delete it to run again", out)
    return result
