"""Why iterative HP still collapses with the round warmup: the sign of each criterion's scores, per round.

On the study's VGG-11 (ReLU, max-pool, BatchNorm in eval mode) the network is piecewise linear in each
weight, so the exact Hessian diagonal equals the Gauss-Newton diagonal and is >= 0: a negative score of
``hutch_pruner`` (½ θ² ⊙ ĥ, ĥ the Hutchinson estimate) is estimation noise. For seed 0 at 0.995 in 10
rounds with ``--round-warmup`` this script prunes with FP, exact OBD (at T = 1 and at HP's T = 200) and
HP exactly as ``iterative.sh`` does (``initprune.prune`` with the run's data, warmup and seeds; the final
mask is compared with the study run's ``mask.pt`` where that is on disk) and records, in every round, the
fraction of negative scores among the weights still kept, per layer. Writes
``report/iterative_scores.md``.

Usage (from the repository root, about 6 minutes on one CPU thread):
    python docs/results/fashion_mnist/study/iterative_scores.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from initprune import prune
from initprune.atomic import atomic_write_text
from initprune.experiments.config import build_config, load_config_file
from initprune.experiments.run import _data_and_model, pruning_data
from initprune.masks import Mask
from initprune.scores import score

STUDY = Path(__file__).resolve().parent
SEED, SPARSITY, ROUNDS = 0, 0.995, 10
CASES = [  # (criterion, options, label)
    ("fisher_pruner", {}, "FP"),
    ("ggn_pruner", {}, "exact OBD (T = 1)"),
    ("ggn_pruner", {"temperature": 200.0}, "exact OBD at T = 200"),
    ("hutch_pruner", {}, "HP (T = 200, 10 probes)"),
]


def _short(name: str) -> str:
    return name.removesuffix(".weight")


def prune_and_record(criterion: str, options: dict[str, Any]) -> tuple[dict, list[dict[str, float]], Path]:
    """The final mask and, per round, {layer: fraction of negative scores among the weights still kept}."""
    folder = (
        STUDY
        / "iterative_round_warmup"
        / f"seed={SEED},rounds={ROUNDS},criterion={criterion},sparsity={SPARSITY}"
    )
    config = build_config(
        {**load_config_file(folder / "config.yaml"), "criterion_options": options, "out": None}
    )
    splits, model = _data_and_model(config, torch.device("cpu"))
    warmup, batches = pruning_data(config, splits)  # the run's own warmup loader and scoring samples
    negative: list[dict[str, float]] = []

    def recording(model: torch.nn.Module, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        scores = score(model, *args, **kwargs)
        named = dict(model.named_parameters())
        kept = {name: named[name].detach() != 0 for name in scores}  # pruned weights are zeroed
        negative.append(
            {
                _short(name): float((s[kept[name]] < 0).float().mean()) if kept[name].any() else float("nan")
                for name, s in scores.items()
            }
        )
        return scores

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = prune(
            model, criterion, batches, sparsity=config.sparsity, rounds=config.rounds, scope=config.scope,
            warmup_batches=config.warmup_batches, warmup_data=warmup,
            round_warmup_batches=config.warmup_batches, seed=config.scoring_seed,
            input_shape=tuple(splits.input_shape), scorer=recording, **options,
        )  # fmt: skip
    return mask, negative, folder


def main() -> None:
    torch.set_num_threads(1)
    lines = [
        "# Sign of the scores in iterative pruning with the round warmup",
        "",
        f"`{' '.join(sys.argv)}` (from the repository root): VGG-11 at width 0.25, seed {SEED}, sparsity "
        f"{SPARSITY}, {ROUNDS} rounds of SynFlow's schedule, BatchNorm warmup of 20 batches before every "
        "round (`iterative.sh`'s `iterative_round_warmup/` settings). The exact Hessian diagonal of this "
        "network equals its Gauss-Newton diagonal (piecewise linear in each weight), so it is >= 0; FP and "
        "exact OBD scores are >= 0 by construction, and a negative HP score is Hutchinson's noise.",
        "",
        "Fraction of negative scores among the weights still kept (round 0: all weights; `–`: layer empty), "
        "and the final mask's density per layer:",
        "",
    ]
    header: list[str] | None = None
    rows, notes = [], []
    for criterion, options, label in CASES:
        mask, negative, folder = prune_and_record(criterion, options)
        layers = list(negative[0])
        if header is None:
            header = ["criterion", "what", *layers]
        for t in (0, len(negative) - 1):
            cells = ["–" if v != v else f"{v:.3f}" for v in negative[t].values()]
            rows.append([label, f"negative, round {t}", *cells])
        density = {_short(n): 100 * float(m.float().mean()) for n, m in mask.items()}
        rows.append([label, "final density (%)", *(f"{density[layer]:.2f}" for layer in layers)])
        stored = folder / "mask.pt"
        if not options and stored.exists():
            same = all(torch.equal(mask[n], m) for n, m in Mask.load(stored).items())
            notes.append(
                f"- {label}: the final mask {'equals' if same else 'differs from'} the study run's `mask.pt`."
            )
        print(label, "done", flush=True)
    assert header is not None
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows] + ["", *notes, ""]
    out = STUDY / "report" / "iterative_scores.md"
    atomic_write_text(out, "\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
