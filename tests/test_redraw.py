"""Scoring samples redrawn on every pass (``scoring_redraw``, the paper's reference code): each pass over
the batches sees a new augmentation, so GraSP's g and Hg come from different views; never cached."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initprune
from initprune.curvature.hvp import batch_gradient, hessian_vector_product
from initprune.data.loader import BatchTransform
from initprune.data.redraw import RedrawnBatches
from initprune.experiments import build_config, run_experiment
from initprune.experiments.cache import cacheable, score_key
from initprune.masks import Mask
from initprune.scores.batches import as_batches


class LoggedBatches(RedrawnBatches):
    """Keeps every draw, to recompute what each pass saw."""

    def _draw(self):
        fresh = super()._draw()
        self.__dict__.setdefault("log", []).append(fresh)
        return fresh


def _batches(seed: int = 3) -> LoggedBatches:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    transform = BatchTransform((0.5,), (0.25,), "cpu", "flip", dtype=torch.float64)
    return LoggedBatches(images, targets, transform, None, torch.Generator().manual_seed(seed))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(48, 5), nn.Tanh(), nn.Linear(5, 3)
    ).double()


def test_every_pass_draws_new_views_of_the_same_images():
    batches = _batches()
    first = [x.clone() for x, _ in batches]
    second = [x.clone() for x, _ in batches]
    assert batches.draws == 3  # the draw made at construction, then one per pass
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.equal(batches[0][0], second[0])  # indexing sees the latest draw
    # the same images each time: a flip of each sample, nothing else
    assert all(torch.equal(x.sort(-1).values, first[0].sort(-1).values) for x in second)
    assert as_batches(batches, torch.device("cpu")) is batches
    unseeded = RedrawnBatches(batches.images, batches.targets, batches.transform)
    assert unseeded.generator.initial_seed() != 0  # drawn from the operating system's entropy


def test_grasp_takes_g_and_hg_from_different_draws():
    model = _model()
    batches = _batches()
    scores = initprune.score(model, "grasp", batches, temperature=1.0)
    params = dict(initprune.prunable_parameters(model))
    model.eval()

    def grasp(g_batches, h_batches):
        g = batch_gradient(model, params, g_batches, temperature=1.0)
        hg = hessian_vector_product(model, params, h_batches, g, temperature=1.0)
        return {n: p.detach() * hg[n] for n, p in params.items()}

    def close(a, b):
        return all(torch.allclose(a[n], b[n], rtol=1e-9, atol=1e-14) for n in a)

    draws = batches.log
    pairs = [(i, j) for i in range(len(draws)) for j in range(i + 1, len(draws))]
    matching = [(i, j) for i, j in pairs if close(scores, grasp(draws[i], draws[j]))]
    assert matching, "the scores are no g and Hg of two successive draws"
    i, j = matching[-1]
    assert not torch.equal(draws[i][0][0], draws[j][0][0])  # two different views
    assert not any(close(scores, grasp(d, d)) for d in draws)  # no single view gives them


SMALL = {
    "model": "lenet5",
    "dataset": "synthetic",
    "dataset_options": {
        "input_shape": [1, 12, 12],
        "train_size": 200,
        "test_size": 50,
        "num_classes": 3,
        "augmentation": "flip",
    },
    "val_size": 40,
    "criterion": "snip",
    "sparsity": 0.8,
    "warmup_batches": 0,
    "scoring_per_class": 3,
    "batch_size": 50,
    "epochs": 0.1,
    "device": "cpu",
}


def test_runs_with_redrawn_scoring_samples_differ_and_are_never_cached(tmp_path):
    masks = []
    for name in ("a", "b"):
        config = build_config({**SMALL, "scoring_redraw": True, "out": str(tmp_path / name)})
        result = run_experiment(config, progress=False, score_cache=tmp_path / "cache")
        assert result["scores_cached"] is False
        masks.append(dict(Mask.load(tmp_path / name / "mask.pt")))
    assert any(not torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    config = build_config({**SMALL, "scoring_redraw": True})
    assert not cacheable(config)
    assert "scoring_redraw" not in score_key(build_config(SMALL), torch.device("cpu"))
    with pytest.raises(initprune.InitpruneError, match="scoring_redraw must be true or false"):
        build_config({**SMALL, "scoring_redraw": "yes"})
