"""Atomic file writes: every result, checkpoint, mask and download appears whole or not at all.

Each writer fills a temporary file beside the target (``.<name>.<random>.tmp``), flushes it to disk, and
renames it over the target (``os.replace`` is atomic on POSIX and Windows); on any error the temporary file
is removed. A process killed mid-write can leave its temporary file behind: :func:`remove_stale_temporaries`
clears them once nobody else writes to the folder. A write that fails for want of space or permission
raises :class:`~initprune.errors.InitpruneError` naming the file and the cause; the target is untouched.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from .errors import InitpruneError

TEMP_SUFFIX = ".tmp"
# Causes of a failed write that the user must fix outside the program (not bugs): said in one line.
_ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "no space left on the device; free some space",
    errno.EDQUOT: "disk quota exceeded; free some space",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.EACCES: "permission denied; fix the folder's permissions or choose another folder",
    errno.EPERM: "operation not permitted; fix the folder's permissions or choose another folder",
}


def write_error(path: str | os.PathLike[str], exc: OSError) -> InitpruneError | None:
    """The one-line error for an environmental write failure (full disk, read-only, no permission), or
    None for any other ``OSError``."""
    cause = _ENVIRONMENT_ERRORS.get(exc.errno or 0)
    if cause is None:
        return None
    return InitpruneError(f"cannot write {str(path)!r}: {cause}, then run the same command again")


def atomic_write(path: str | os.PathLike[str], fill: Callable[[IO[bytes]], None]) -> None:
    """Call ``fill(file)`` on a temporary binary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp, recorder = None, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions of a new file
        with os.fdopen(fd, "wb") as f:
            recorder = _Recorder(f)
            fill(recorder)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        # torch.save reports a failed write as a RuntimeError of its own; the recorder kept the cause.
        cause = exc if isinstance(exc, OSError) else getattr(recorder, "error", None)
        clear = write_error(path, cause) if cause is not None else None
        if clear is not None:
            raise clear from None
        raise


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left in ``folder``; returns them.

    Only call this while no other process writes into ``folder`` (a run holds its folder's lock)."""
    removed = []
    for p in Path(folder).glob(f".*.*{TEMP_SUFFIX}"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class _Recorder:
    """A file whose ``write`` remembers the ``OSError`` it raised (torch.save hides it in a RuntimeError)."""

    def __init__(self, file: IO[bytes]):
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def atomic_torch_save(obj: object, path: str | os.PathLike[str]) -> None:
    """``torch.save`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))
