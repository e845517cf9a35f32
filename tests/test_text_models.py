"""transformer_lm and transformer_cls (token models), and vit_tiny's norm=batchnorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initprune
from initprune.curvature import per_sample_gradient_moments
from initprune.curvature.losses import get_loss
from initprune.errors import InitpruneError
from initprune.models import create_model, get_model, models
from initprune.models.vit import TokenBatchNorm

VOCAB, LEN = 11, 6


def lm(**options) -> nn.Module:
    torch.manual_seed(0)
    return create_model(
        "transformer_lm", VOCAB, **{"dim": 16, "depth": 2, "heads": 2, "max_len": 8, **options}
    )


def tokens(n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (n, LEN), generator=gen), torch.randint(0, VOCAB, (n, LEN), generator=gen)


def test_text_models_are_registered_as_token_models():
    assert {"transformer_lm", "transformer_cls"} <= set(models())
    assert get_model("transformer_lm").inputs == "tokens" and get_model("vit_tiny").inputs == "images"


def test_lm_is_causal_tied_and_prunes_only_block_projections():
    model = lm().eval()
    x, _ = tokens()
    out = model(x)
    assert out.shape == (3, LEN, VOCAB)
    changed = x.clone()
    changed[:, 4] = (changed[:, 4] % (VOCAB - 1)) + 1
    with torch.no_grad():
        torch.testing.assert_close(model(changed)[:, :4], out[:, :4].detach())  # no peeking ahead
        assert not torch.allclose(model(changed)[:, 4], out[:, 4])
    assert model.head.weight is model.tok_embed.weight
    names = list(initprune.prunable_parameters(model))
    assert names == [f"blocks.{b}.{layer}.weight" for b in range(2) for layer in
                     ("attn.q", "attn.k", "attn.v", "attn.out", "fc1", "fc2")]  # fmt: skip
    untied = lm(tie_embeddings=False)
    assert untied.head.weight is not untied.tok_embed.weight
    assert "head.weight" not in initprune.prunable_parameters(untied)  # the classifier stays dense
    with pytest.raises(InitpruneError, match="longer than max_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(InitpruneError, match="integer token ids"):
        model(torch.zeros(1, 4))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classifier_ignores_padding(pooling):
    torch.manual_seed(0)
    model = create_model("transformer_cls", 4, dim=16, depth=2, heads=2, max_len=12, pooling=pooling).eval()
    x, _ = tokens()
    padded = torch.cat([x, torch.zeros(3, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(x), rtol=1e-5, atol=1e-6)
    assert model(x).shape == (3, 4)
    assert "head.weight" not in initprune.prunable_parameters(model)
    with pytest.raises(InitpruneError, match="unknown pooling 'max'; valid: cls, mean"):
        create_model("transformer_cls", 4, pooling="max")


def test_every_criterion_scores_the_lm_with_the_token_loss_and_synflow_says_why_not():
    model = lm()
    x, y = tokens()
    params = initprune.prunable_parameters(model)
    for name, crit in ((n, initprune.get_criterion(n)) for n in initprune.criteria()):
        options = {"probes": 1} if "probes" in crit.options else {}
        data = [(x, y)] if crit.needs_data else None
        if name == "synflow":
            with pytest.raises(InitpruneError, match=r"synflow cannot score TransformerLM.*Embedding"):
                initprune.score(model, name, data, input_shape=(LEN,), loss="token_cross_entropy")
            continue
        scores = initprune.score(model, name, data, input_shape=(LEN,), loss="token_cross_entropy", **options)
        assert set(scores) == set(params)
        assert all(torch.isfinite(s).all() for s in scores.values()), name


def test_lm_per_sample_gradients_hook_route_matches_the_loop():
    model = lm().double().eval()
    x, y = tokens(4)
    params = initprune.prunable_parameters(model)
    loss = get_loss("token_cross_entropy")
    with initprune.scores.scoring_mode(model, params):
        a = per_sample_gradient_moments(model, params, [(x, y)], method="hooks", loss=loss)
        b = per_sample_gradient_moments(model, params, [(x, y)], method="loop", loss=loss)
    for part_a, part_b in zip(a, b, strict=True):
        for k in params:
            torch.testing.assert_close(part_a[k], part_b[k], rtol=1e-10, atol=1e-15)


def test_vit_batchnorm_replaces_every_layernorm_and_warms_up():
    torch.manual_seed(0)
    options = {"image_size": 28, "patch_size": 7, "dim": 16, "depth": 2, "heads": 2}
    model = create_model("vit_tiny", 10, 1, norm="batchnorm", **options)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert sum(isinstance(m, TokenBatchNorm) for m in model.modules()) == 5  # 2 per block + final
    assert sum(isinstance(m, nn.LayerNorm) for m in create_model("vit_tiny", 10, 1, **options).modules()) == 5
    x = torch.randn(8, 1, 28, 28)
    before = model.blocks[0].norm1.running_mean.clone()
    initprune.warmup_bn(model, [(x, torch.zeros(8, dtype=torch.long))], batches=1)
    assert not torch.equal(model.blocks[0].norm1.running_mean, before)
    model.eval()
    with torch.no_grad():  # eval mode: each sample alone gives the same output
        torch.testing.assert_close(model(x[:1]), model(x)[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(InitpruneError, match="unknown norm 'groupnorm'; valid: batchnorm, layernorm"):
        create_model("vit_tiny", 10, 1, norm="groupnorm", **options)
