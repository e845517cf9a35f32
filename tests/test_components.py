"""Density per component (``initprune.experiments.components``): a layer's role in its repeated block, the
mean density and empty count per role against hand-computed values, and the report's table."""

from __future__ import annotations

import json

import pandas as pd
import yaml

from initprune.cli import main
from initprune.experiments.components import (
    component_densities,
    component_table,
    components,
    layer_component,
)
from initprune.models import create_model
from initprune.prunable import prunable_weights


def test_layer_component_names_a_role_in_its_block():
    assert layer_component("blocks.1.attn.q.weight") == "blocks.*.attn.q"
    assert layer_component("blocks.12.fc2.weight") == "blocks.*.fc2"
    assert layer_component("layer2.0.conv1.weight") == "layer2.*.conv1"
    assert layer_component("layer2.0.shortcut.0.weight") == "layer2.*.shortcut.0"
    assert layer_component("features.3.weight") == "features.3"  # a plain sequential CNN: its own name
    assert layer_component("head.weight") == "head"
    assert layer_component("patch_embed") == "patch_embed"


def _names(model):
    return [f"{module}.{param}" if module else param for module, _, param in prunable_weights(model)]


def test_components_of_registered_models():
    vit = create_model("vit_tiny", in_channels=1, image_size=28, patch_size=7, dim=32, depth=3, heads=2)
    groups = {k: len(v) for k, v in components(_names(vit)).items()}
    assert groups["blocks.*.attn.qkv"] == groups["blocks.*.fc1"] == 3
    assert groups["patch_embed"] == 1
    lm = create_model("transformer_lm", num_classes=256, dim=32, depth=2, heads=2, max_len=16)
    assert {k: len(v) for k, v in components(_names(lm)).items() if k.startswith("blocks")} == {
        f"blocks.*.{role}": 2 for role in ("attn.q", "attn.k", "attn.v", "attn.out", "fc1", "fc2")
    }
    vgg = create_model("vgg11", in_channels=1)
    assert max(len(v) for v in components(_names(vgg)).values()) == 1  # no repeated block: no table


def test_component_densities_mean_and_empty_count():
    density = {"blocks.0.attn.q.weight": 0.0, "blocks.1.attn.q.weight": 0.25, "blocks.0.fc1.weight": 0.5,
               "blocks.1.fc1.weight": 0.1, "head.weight": 1.0}  # fmt: skip
    got = component_densities(density)
    assert got["blocks.*.attn.q"] == (0.125, 1)
    assert got["blocks.*.fc1"][0] == (0.5 + 0.1) / 2 and got["blocks.*.fc1"][1] == 0
    assert got["head"] == (1.0, 0)


def _runs(densities):
    rows = [{"criterion": c, "sparsity": s, "per_layer_density": d} for c, s, d in densities]
    return pd.DataFrame(rows)


def test_component_table_cells():
    q0, q1, f0, f1 = (
        "blocks.0.attn.q.weight",
        "blocks.1.attn.q.weight",
        "blocks.0.fc1.weight",
        "blocks.1.fc1.weight",
    )
    pruned = _runs([
        ("hp", 0.9, {q0: 0.0, q1: 0.02, f0: 0.2, f1: 0.1}),
        ("hp", 0.9, {q0: 0.04, q1: 0.02, f0: 0.3, f1: 0.2}),
        ("snip", 0.9, {q0: 0.1, q1: 0.1, f0: 0.1, f1: 0.1}),
    ])  # fmt: skip
    lines = component_table(pruned, ["hp", "snip"], [0.9])
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| 0.9 |")}
    # hp, q: run means 0.01 and 0.03 -> 2.00 %, one run of two with an empty q layer
    assert rows["blocks.*.attn.q (2)"] == "| 0.9 | blocks.*.attn.q (2) | 2.00 ∅1/2 | 10.0 |"
    # hp, fc1: run means 0.15 and 0.25 -> 20.0 %
    assert rows["blocks.*.fc1 (2)"] == "| 0.9 | blocks.*.fc1 (2) | 20.0 | 10.0 |"
    vgg = _runs([("hp", 0.9, {"features.0.weight": 0.5, "features.3.weight": 0.1})])
    assert component_table(vgg, ["hp"], [0.9]) == []


def test_report_shows_components_for_a_transformer(tmp_path):
    root = tmp_path / "runs"
    for seed, (q, fc) in enumerate([(0.0, 0.3), (0.1, 0.2)]):
        folder = root / f"run{seed}"
        folder.mkdir(parents=True)
        config = {"model": "transformer_lm", "dataset": "fortunes_lm", "criterion": "hutch_pruner",
                  "sparsity": 0.9, "seed": seed, "out": str(folder)}  # fmt: skip
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        density = {"blocks.0.attn.q.weight": q, "blocks.1.attn.q.weight": q,
                   "blocks.0.fc1.weight": fc, "blocks.1.fc1.weight": fc}  # fmt: skip
        result = {**config, "target_sparsity": 0.9, "test_accuracy": 0.3, "per_layer_density": density,
                  "collapsed_layers": [], "disconnected_layers": [], "scoring_seconds": 1.0}  # fmt: skip
        (folder / "result.json").write_text(json.dumps(result))
    assert main(["report", str(root), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Density per component (%)" in text
    assert "| 0.9 | blocks.*.attn.q (2) | 5.00 ∅1/2 |" in text
    assert "| 0.9 | blocks.*.fc1 (2) | 25.0 |" in text
