"""A sparse network as a small file: ``save_export`` / ``load_export`` (safetensors).

A masked weight is stored as its kept values (in their own dtype, row-major order) and their flat
indices into the weight (``int16`` for weights of at most 32,768 entries, ``int32`` below 2³¹, ``int64``
above); every other tensor of the ``state_dict`` (biases, normalization parameters and statistics, the
layers kept dense) is stored whole. :func:`load_export` scatters the values into zeros and gives back the
dense ``state_dict`` bit for bit: the same keys in the same order, dtypes, shapes and bits (pruned
entries are +0.0, as initprune's masks and training leave them), tied entries sharing one tensor again.

Why safetensors: a flat, pickle-free format (loading runs no code, unlike ``torch.load`` of a pickle),
read by every framework and memory-mappable; the file is ``8 + header + raw tensor bytes``, so its size
is the data's. A kept weight costs its value plus an index (4 + 4 bytes in float32 for most layers),
so the file is ``2 × density`` of the dense weights' size: about 1/5 at sparsity 0.9, 1/50 at 0.99.

The file layout: tensors ``<name>`` (dense), ``<name>:values`` and ``<name>:indices`` (sparse); the
metadata holds ``format`` (``initprune.sparse``), ``version``, ``order`` (the keys of the state_dict),
``sparse`` (name → shape), ``aliases`` (tied key → the key stored) and any string metadata given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .atomic import atomic_write_bytes
from .errors import InitpruneError

__all__ = ["FORMAT", "export_metadata", "load_export", "load_export_mask", "save_export"]

FORMAT = "initprune.sparse"
_VERSION = "1"


def _index_dtype(numel: int) -> torch.dtype:
    if numel <= 2**15:
        return torch.int16
    return torch.int32 if numel <= 2**31 - 1 else torch.int64


def _state_of(model_or_state: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(model_or_state, nn.Module):
        if any(parametrize.is_parametrized(m) for m in model_or_state.modules()):
            raise InitpruneError(
                f"{type(model_or_state).__name__} is reparametrized (a mask held with mask.hold?): call "
                "handle.remove() before exporting, so the state_dict has its plain names"
            )
        return dict(model_or_state.state_dict())
    return dict(model_or_state)


def save_export(
    model_or_state: nn.Module | Mapping[str, Tensor],
    mask: Mapping[str, Tensor],
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write the sparse network (a model or its ``state_dict``, pruned by ``mask``) to ``path`` as
    safetensors, atomically; returns the file's size in bytes.

    Every masked entry must be in the state_dict, with the mask's shape, and every pruned value must be 0
    (:class:`InitpruneError` otherwise, before anything is written): the export stores the kept values
    only, so a nonzero pruned value would be lost. A pruned -0.0 is read back as +0.0.
    """
    from safetensors.torch import save

    state = _state_of(model_or_state)
    tensors: dict[str, Tensor] = {}
    sparse: dict[str, list[int]] = {}
    aliases: dict[str, str] = {}
    stored: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    for name, keep in mask.items():
        if name not in state:
            raise InitpruneError(
                f"mask entry {name!r} is not in the state_dict; its keys: {', '.join(state)}"
            )
        if tuple(keep.shape) != tuple(state[name].shape):
            raise InitpruneError(
                f"mask for {name!r} has shape {tuple(keep.shape)} but the tensor has "
                f"{tuple(state[name].shape)}"
            )
    for name, value in state.items():
        if not torch.is_tensor(value):
            raise InitpruneError(f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor")
        # Tied entries (one tensor under two keys): stored once, safetensors refuses shared memory.
        key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.stride()), value.dtype)
        tensor = value.detach().cpu()
        if tensor.numel() and key in stored and tuple(state[stored[key]].shape) == tuple(tensor.shape):
            aliases[name] = stored[key]
            continue
        stored[key] = name
        if name not in mask:
            tensors[name] = tensor.contiguous()
            continue
        flat = tensor.contiguous().reshape(-1)
        keep = mask[name].detach().cpu().reshape(-1).to(torch.bool)
        if bool((flat[~keep] != 0).any()):
            count = int((flat[~keep] != 0).sum())
            raise InitpruneError(
                f"{name!r} has {count} nonzero value(s) where the mask prunes: this is not the mask's sparse "
                "network (apply or hold the mask first)"
            )
        indices = keep.nonzero().reshape(-1)
        tensors[f"{name}:values"] = flat[indices].clone()
        tensors[f"{name}:indices"] = indices.to(_index_dtype(flat.numel()))
        sparse[name] = list(tensor.shape)
    header = {
        **{str(k): str(v) for k, v in (metadata or {}).items()},
        "format": FORMAT,
        "version": _VERSION,
        "order": json.dumps(list(state)),
        "sparse": json.dumps(sparse),
        "aliases": json.dumps(aliases),
    }
    data = save(tensors, metadata=header)
    atomic_write_bytes(path, data)
    return len(data)


def _read(
    path: str | os.PathLike[str], device: str | torch.device
) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InitpruneError(f"export file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InitpruneError(f"{str(path)!r} is not a readable safetensors file ({first})") from None
    if meta.get("format") != FORMAT:
        raise InitpruneError(f"{str(path)!r} is not an initprune sparse export (no format {FORMAT!r})")
    if meta.get("version") != _VERSION:
        raise InitpruneError(
            f"{str(path)!r} has export version {meta.get('version')!r}; this reads {_VERSION}"
        )
    return tensors, meta


def load_export(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The dense ``state_dict`` of a file written by :func:`save_export` (or ``initprune export``): the
    same keys in the same order and the same bits; ``model.load_state_dict(load_export(path))`` restores
    the trained sparse network. The export's metadata is in :func:`export_metadata`."""
    tensors, meta = _read(path, device)
    sparse = json.loads(meta["sparse"])
    aliases = json.loads(meta["aliases"])
    state: dict[str, Tensor] = {}
    for name in json.loads(meta["order"]):
        if name in aliases:
            continue
        if name in sparse:
            values, indices = tensors[f"{name}:values"], tensors[f"{name}:indices"]
            dense = torch.zeros(sparse[name], dtype=values.dtype, device=values.device)
            dense.view(-1)[indices.long()] = values
            state[name] = dense
        else:
            state[name] = tensors[name]
    return {name: state[aliases.get(name, name)] for name in json.loads(meta["order"])}


def load_export_mask(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The keep-masks of an export's sparse tensors (name → bool tensor): ``initprune.Mask(...)`` of it
    holds the mask again for fine-tuning."""
    tensors, meta = _read(path, "cpu")
    masks = {}
    for name, shape in json.loads(meta["sparse"]).items():
        keep = torch.zeros(shape, dtype=torch.bool)
        keep.view(-1)[tensors[f"{name}:indices"].long()] = True
        masks[name] = keep
    return masks


def export_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of an export (``format``, ``version``, and what the writer added: for
    ``initprune export``, the run's ``settings`` as JSON and its ``settings_hash``)."""
    return _read(path, "cpu")[1]
