"""Where the criteria put a byte-level transformer's weights at initialization, per component.

For `transformer_lm` (the study's size: dim 64, depth 2, 4 heads) at seeds 0, 42, 123, scores every
prunable weight with SNIP, GN, FD, HD and HP on 64 training windows (the study's scoring batch size) and
writes, per component (`blocks.*.attn.q` …, both blocks together), the median |score| relative to the
median over all prunable weights, and the share of the component kept by a global top-k at 0.9 and 0.98.
It explains which parts a global threshold empties first; no training is involved.

    python docs/results/fortunes/init_saliency.py   # writes docs/results/fortunes/init_saliency.md
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

import initprune
from initprune.data.text import load_fortunes_lm
from initprune.experiments.components import components
from initprune.models import create_model

SEEDS = (0, 42, 123)
CRITERIA = ("snip", "grad_norm", "fisher_diag", "hutch_diag", "hutch_pruner")
SPARSITIES = (0.9, 0.98)
OUT = Path(__file__).with_name("init_saliency.md")


def main() -> None:
    source = load_fortunes_lm(None)
    rows: dict[tuple[str, str], list[list[float]]] = {}
    order: list[str] = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = create_model("transformer_lm", num_classes=256, dim=64, depth=2, heads=4, max_len=128)
        pick = torch.randperm(len(source.train), generator=torch.Generator().manual_seed(seed))[:64]
        x, y = source.train.images[pick], source.train.targets[pick]
        for criterion in CRITERIA:
            scores = initprune.score(model, criterion, [(x, y)], seed=seed, loss="token_cross_entropy")
            flat = torch.cat([s.abs().flatten() for s in scores.values()]).double()
            median = flat.median()
            cuts = {s: torch.topk(flat, round((1 - s) * flat.numel())).values.min() for s in SPARSITIES}
            groups = components(list(scores))
            order = list(groups)
            for component, names in groups.items():
                part = torch.cat([scores[n].abs().flatten() for n in names]).double()
                kept = [float((part >= cuts[s]).double().mean()) for s in SPARSITIES]
                rows.setdefault((criterion, component), []).append([float(part.median() / median), *kept])
    lines = [
        "# Saliency per component at initialization (`init_saliency.py`)",
        "",
        "`transformer_lm` (dim 64, depth 2, 4 heads), 64 training windows of `fortunes_lm`, per-token loss; "
        f"seeds {', '.join(map(str, SEEDS))} (mean over seeds). *median*: the component's median |score| "
        "over the median of all prunable weights; *kept at s*: the share of the component's weights a "
        "global top-k at sparsity s keeps (everything else stays dense: embeddings, LayerNorms, biases, the "
        "tied output layer).",
        "",
        "| criterion | component | median | " + " | ".join(f"kept at {s:g}" for s in SPARSITIES) + " |",
        "|---|---|---|" + "---|" * len(SPARSITIES),
    ]
    for criterion in CRITERIA:
        for component in order:
            values = rows[(criterion, component)]
            means = [statistics.fmean(v[i] for v in values) for i in range(1 + len(SPARSITIES))]
            kept = " | ".join(f"{100 * m:.2f} %" for m in means[1:])
            lines.append(f"| {criterion} | {component} | {means[0]:.3g} | {kept} |")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
