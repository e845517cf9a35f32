"""Density per component: the layers that play one role in every repeated block, taken together.

A transformer's layers are named ``blocks.<i>.<role>`` (``blocks.0.attn.q.weight``,
``blocks.3.fc1.weight``); which *role* a criterion empties first (the attention's query and key
projections, the MLP, the patch embedding) is the question "which parts collapse first" asks, and a
per-layer list of 12–50 layers hides it. :func:`layer_component` names a layer with its block number read
as ``*`` (``blocks.*.attn.q``, a ResNet's ``layer2.*.conv1``); a layer outside any numbered block keeps its
own name (``patch_embed``, ``head``). The report shows the table only where some component has two or more
layers (a model with repeated blocks); for a plain sequential CNN (``features.0``, ``features.3``) every
layer is its own component and the per-layer plot says the same.
"""

from __future__ import annotations

import math
from typing import Any

_SUFFIXES = (".weight", ".weight_orig")


def layer_component(name: str) -> str:
    """The role of layer ``name`` in its repeated block: its name without ``.weight`` and with every
    integer path segment but a last one read as ``*`` (``blocks.1.attn.q.weight`` → ``blocks.*.attn.q``,
    ``layer2.0.conv1.weight`` → ``layer2.*.conv1``); a name whose only integers end it stays whole
    (``features.3.weight`` → ``features.3``, ``head.weight`` → ``head``)."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    parts = name.split(".")
    return ".".join("*" if p.isdigit() and i < len(parts) - 1 else p for i, p in enumerate(parts))


def components(layers: list[str]) -> dict[str, list[str]]:
    """Layers grouped by :func:`layer_component`, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for layer in layers:
        groups.setdefault(layer_component(layer), []).append(layer)
    return groups


def component_densities(per_layer_density: dict[str, float]) -> dict[str, tuple[float, int]]:
    """For each component: the mean density of its layers and how many of them are empty (density 0)."""
    out: dict[str, tuple[float, int]] = {}
    for component, layers in components(list(per_layer_density)).items():
        values = [float(per_layer_density[layer]) for layer in layers]
        out[component] = (sum(values) / len(values), sum(v == 0.0 for v in values))
    return out


def component_table(pruned: Any, criteria: list[str], sparsities: list[float]) -> list[str]:
    """Markdown lines: mean density (%) of each component per criterion and sparsity over the runs, with
    ``∅k/n`` where k of the n runs left at least one of the component's layers empty; nothing when no
    component has two or more layers (a model without repeated blocks)."""
    if "per_layer_density" not in pruned:
        return []
    layer_lists = [d for d in pruned["per_layer_density"] if isinstance(d, dict) and d]
    if not layer_lists:
        return []
    groups = components(list(layer_lists[0]))
    if max(len(layers) for layers in groups.values()) < 2:
        return []
    lines = [
        "",
        "Density per component (%): the mean density of the layers that play one role in every block "
        "(`blocks.*.<role>`), mean over runs; `∅k/n`: k of n runs left at least one of them empty.",
        "",
        "| sparsity | component | " + " | ".join(criteria) + " |",
        "|---|---|" + "---|" * len(criteria),
    ]
    for s in sparsities:
        at = pruned[pruned["sparsity"] == s]
        # each run's components, computed once: {criterion: [(per_layer_density, its components)]}
        by_criterion = {
            c: [(d, component_densities(d)) for d in at[at["criterion"] == c]["per_layer_density"]
                if isinstance(d, dict)]
            for c in criteria
        }  # fmt: skip
        for component, layers in groups.items():
            cells = []
            for c in criteria:
                runs = [parts for d, parts in by_criterion[c] if all(layer in d for layer in layers)]
                stats = [parts[component] for parts in runs]
                if not stats:
                    cells.append("")
                    continue
                mean = sum(m for m, _ in stats) / len(stats)
                empty = sum(k > 0 for _, k in stats)
                text = _percent(mean)
                cells.append(f"{text} ∅{empty}/{len(stats)}" if empty else text)
            lines.append(f"| {s:g} | {component} ({len(layers)}) | " + " | ".join(cells) + " |")
    return lines


def _percent(value: float) -> str:
    if math.isnan(value):
        return ""
    x = 100.0 * value
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"
