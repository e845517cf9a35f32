"""Training and evaluation with the per-token loss: perplexity and bits per byte in evaluate, metrics.jsonl,
result.json, sweep summaries and the report; transformer_lm on fortunes_lm end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from initprune.data import TensorLoader
from initprune.experiments import build_config, run_experiment
from initprune.experiments.report import write_report
from initprune.experiments.sweep import run_sweep
from initprune.train import TrainConfig, evaluate, train

from .test_text_data import write_fortunes

V = 256


class Uniform(nn.Module):
    """Equal logits for every byte at every position (perplexity exactly 256)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.scale * torch.ones(*x.shape, V)


def test_uniform_model_has_perplexity_256_and_8_bits_per_byte():
    x = torch.randint(0, V, (5, 7))
    y = torch.randint(0, V, (5, 7))
    y[0, :3] = -100
    result = evaluate(Uniform(), TensorLoader((x, y), 2, shuffle=False), loss="token_cross_entropy")
    assert result["perplexity"] == pytest.approx(256.0, rel=1e-6)
    assert result["bits_per_byte"] == pytest.approx(8.0, rel=1e-6)
    assert result["count"] == 5 * 7 - 3  # counted tokens


def test_token_evaluation_matches_a_hand_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(V, 8), nn.Linear(8, V))
    x = torch.randint(0, V, (6, 5))
    y = torch.randint(0, V, (6, 5))
    y[1, 4] = y[3, 0] = -100
    with torch.no_grad():
        logits = model(x)
    keep = y != -100
    nll = -logits.log_softmax(-1).gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    loss = float(nll[keep].mean())  # per token over the split, not per sequence
    accuracy = float((logits.argmax(-1) == y)[keep].float().mean())
    result = evaluate(model, TensorLoader((x, y), 4, shuffle=False), loss="token_cross_entropy")
    assert result["loss"] == pytest.approx(loss, rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-6)
    assert result["bits_per_byte"] == pytest.approx(loss / math.log(2), rel=1e-6)
    assert result["accuracy"] == pytest.approx(accuracy)


def test_training_with_the_token_loss_learns_and_reports_per_token_metrics():
    torch.manual_seed(0)
    x = torch.randint(0, 4, (64, 6)) * 3  # bytes 0, 3, 6, 9: a unigram model alone reaches perplexity 4
    y = torch.roll(x, -1, dims=1)
    model = nn.Sequential(nn.Embedding(V, 16), nn.Linear(16, V))
    config = TrainConfig(
        epochs=6, lr=0.05, optimizer="adamw", schedule="constant", loss="token_cross_entropy"
    )
    out = train(model, TensorLoader((x, y), 16), config, val_loader=TensorLoader((x, y), 32), progress=False)
    last = out["history"][-1]
    assert last["val_perplexity"] < 6.0 < 256.0
    assert last["val_bits_per_byte"] == pytest.approx(math.log2(last["val_perplexity"]), rel=1e-6)
    with pytest.raises(Exception, match="unknown loss 'mse'"):
        TrainConfig(loss="mse")


def _lm_settings(folder, out, **extra):
    return {
        "model": "transformer_lm",
        "model_options": {"dim": 16, "depth": 1, "heads": 2, "max_len": 16},
        "dataset": "fortunes_lm",
        "data_dir": str(folder),
        "dataset_options": {"seq_len": 16},
        "val_size": 20,
        "criterion": "fisher_mc_pruner",
        "scoring_sequences": 8,
        "sparsity": 0.8,
        "epochs": 1,
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 0.003,
        "device": "cpu",
        "out": str(out),
        **extra,
    }


def test_lm_run_writes_perplexity_to_metrics_and_result(tmp_path):
    write_fortunes(tmp_path / "data")
    with pytest.warns(UserWarning, match="path check skipped"):
        result = run_experiment(
            build_config(_lm_settings(tmp_path / "data", tmp_path / "run")), progress=False
        )
    assert result["loss"] == "token_cross_entropy"  # the dataset's loss, unasked
    assert result["scoring_samples"] == 8
    for key in ("val_perplexity", "test_perplexity", "val_bits_per_byte", "test_bits_per_byte", "val_loss"):
        assert math.isfinite(result[key]), key
    assert result["test_perplexity"] == pytest.approx(math.exp(result["test_loss"]))
    assert result["test_perplexity"] < 256.0
    assert set(result["per_layer_density"]) == {
        f"blocks.0.{n}.weight" for n in ("attn.q", "attn.k", "attn.v", "attn.out", "fc1", "fc2")
    }
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["val_perplexity"]) and math.isfinite(record["val_bits_per_byte"])


def test_sweep_and_report_summarize_perplexity(tmp_path):
    write_fortunes(tmp_path / "data")
    base = _lm_settings(tmp_path / "data", tmp_path / "unused", epochs=0.5)
    base.pop("out")
    with pytest.warns(UserWarning):
        rows = run_sweep(
            base, {"criterion": ["snip", "magnitude"], "seed": [0, 1]}, tmp_path / "sweep", progress=False
        )
    assert all(math.isfinite(r["test_perplexity_mean"]) for r in rows)
    assert "test_perplexity_mean" in (tmp_path / "sweep" / "summary.md").read_text()
    report = write_report(tmp_path / "sweep", tmp_path / "report")
    text = report.read_text()
    assert "Test perplexity (per byte; lower is better)" in text
    perplexity_plots = list((tmp_path / "report").glob("perplexity_*.png"))
    assert len(perplexity_plots) == 1 and f"]({perplexity_plots[0].name})" in text


def test_topic_classification_run(tmp_path):
    write_fortunes(tmp_path / "data")
    settings = _lm_settings(tmp_path / "data", tmp_path / "run", dataset="fortunes_topic", criterion="snip")
    settings.update(model="transformer_cls", dataset_options={"seq_len": 16, "min_texts": 40}, val_size=10)
    with pytest.warns(UserWarning, match="path check skipped"):
        result = run_experiment(build_config(settings), progress=False)
    assert 0.0 <= result["test_accuracy"] <= 1.0 and "test_perplexity" not in result


def test_a_model_for_images_is_refused_on_text_before_anything_runs(tmp_path):
    from initprune.errors import InitpruneError
    from initprune.experiments.run import validate_config

    with pytest.raises(
        InitpruneError, match="model 'vgg11' takes images but dataset 'fortunes_lm' holds tokens"
    ):
        validate_config(build_config({"dataset": "fortunes_lm", "out": str(tmp_path / "x")}))
    with pytest.raises(InitpruneError, match=r"models for images: .*vit_tiny"):
        validate_config(build_config({"model": "transformer_lm", "out": str(tmp_path / "y")}))
