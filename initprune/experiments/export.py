"""``initprune export RUN_DIR OUT``: a finished run's trained sparse network as a small safetensors file.

The network is the model of the run's final checkpoint (``checkpoint.pt``, the weights ``result.json``'s
``test_accuracy`` was measured with unless the run selected an epoch on the test set), its mask the run's
``mask.pt``; both must carry the run's settings hash. The file (see :mod:`initprune.export`) records the
run's settings, so the model is rebuilt with ``initprune.models.create_model`` from them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..checkpoint import CHECKPOINT_NAME
from ..errors import InitpruneError
from ..export import save_export
from ..masks import Mask
from .folder import MASK, RESULT, corrupt, read_torch, recorded_settings


def _belongs(path: Path, found: Any, settings_hash: str | None) -> None:
    if settings_hash is not None and found != settings_hash:
        raise InitpruneError(
            f"{str(path)!r} belongs to another run (settings hash {found}), not to the run of its folder "
            f"({settings_hash})"
        )


def export_run(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the trained sparse network of the finished run in ``run_dir`` to ``out`` (atomically).

    Returns ``{"path", "bytes", "dense_bytes", "checkpoint_bytes", "sparsity"}``: the export's size, the
    size of the dense model's ``state_dict`` as ``torch.save`` writes it, and of ``checkpoint.pt`` (model
    and optimizer state). A folder that holds no finished run is refused, saying what is missing.
    """
    import io

    import torch

    run = Path(run_dir)
    if not run.is_dir():
        raise InitpruneError(f"run folder {str(run)!r} does not exist")
    recorded = recorded_settings(run)
    if recorded is None or not (run / RESULT).is_file():
        raise InitpruneError(
            f"{str(run)!r} holds no finished run (no {RESULT}): export reads a run folder after "
            "`initprune run` has finished in it"
        )
    settings, settings_hash, _, _ = recorded
    for name in (MASK, CHECKPOINT_NAME):
        if not (run / name).is_file():
            raise InitpruneError(
                f"{str(run / name)!r} is missing: run the same `initprune run` again to restore it"
            )
    payload = read_torch(run / MASK)
    if not isinstance(payload, dict) or not isinstance(payload.get("masks"), dict):
        raise corrupt(run / MASK, "not a mask")
    _belongs(run / MASK, payload.get("settings_hash"), settings_hash)
    mask = Mask(payload["masks"])
    checkpoint = read_torch(run / CHECKPOINT_NAME)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise corrupt(run / CHECKPOINT_NAME, "it holds no model state")
    _belongs(run / CHECKPOINT_NAME, checkpoint.get("settings_hash"), settings_hash)
    state = checkpoint["model"]
    metadata = {"settings": json.dumps(settings, default=str), "settings_hash": settings_hash or ""}
    size = save_export(state, mask, out, metadata=metadata)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return {
        "path": str(out),
        "bytes": size,
        "dense_bytes": buffer.getbuffer().nbytes,
        "checkpoint_bytes": (run / CHECKPOINT_NAME).stat().st_size,
        "sparsity": mask.sparsity,
    }
