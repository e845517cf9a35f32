"""Path counting and disconnected layers."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from initprune import LayerCollapseWarning, Mask, prunable_parameters, prune
from initprune.collapse import collapsed_or_cut, disconnected_layers, paths_through_weights, run_collapsed


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


def _mask(m0: torch.Tensor, m2: torch.Tensor, m4: torch.Tensor) -> Mask:
    return Mask({"0.weight": m0, "2.weight": m2, "4.weight": m4})


def test_path_counts_equal_matrix_products():
    g = torch.Generator().manual_seed(1)
    masks = [torch.rand(s, generator=g) > 0.4 for s in ((4, 3), (4, 4), (2, 4))]
    total, counts = paths_through_weights(_mlp(), _mask(*masks), (3,))
    m0, m2, m4 = (m.double() for m in masks)
    assert total == pytest.approx(float(torch.ones(2).double() @ m4 @ m2 @ m0 @ torch.ones(3).double()))
    # paths through weight (j, i) of the middle layer: (paths into i) × (paths out of j)
    into = m0 @ torch.ones(3).double()
    out_of = torch.ones(2).double() @ m4
    torch.testing.assert_close(counts["2.weight"], m2 * torch.outer(out_of, into))


def test_a_layer_with_weights_but_no_path_is_disconnected():
    m0 = torch.zeros(4, 3, dtype=torch.bool)
    m0[0] = True  # only hidden unit 0 receives input
    m2 = torch.zeros(4, 4, dtype=torch.bool)
    m2[:, 1] = True  # only hidden unit 1 is read: it has no input
    m4 = torch.ones(2, 4, dtype=torch.bool)
    mask = _mask(m0, m2, m4)
    assert mask.collapsed() == []
    assert disconnected_layers(_mlp(), mask, (3,)) == ["0.weight", "2.weight", "4.weight"]
    m2[:, 0] = True
    assert disconnected_layers(_mlp(), _mask(m0, m2, m4), (3,)) == []


def test_batchnorm_and_residual_nets_are_connected_when_dense():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.relu(self.bn(self.conv(x)))

    model = nn.Sequential(nn.Conv2d(1, 2, 3), Block(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    mask = Mask({"0.weight": torch.ones(2, 1, 3, 3), "1.conv.weight": torch.zeros(2, 2, 3, 3)})
    # the residual sum keeps a path even though the block's conv is empty
    assert disconnected_layers(model, mask, (1, 6, 6)) == ["1.conv.weight"]
    total, _ = paths_through_weights(model, mask, (1, 6, 6))
    assert total > 0


def test_prune_warns_when_kept_weights_lie_on_no_path(monkeypatch):
    import initprune.pruning as pruning

    model = _mlp()
    forced = {"0.weight": torch.zeros(4, 3), "2.weight": torch.zeros(4, 4)}
    forced["0.weight"][0] = 1.0
    forced["2.weight"][:, 1] = 1.0
    monkeypatch.setattr(pruning, "score", lambda *a, **k: {k2: v.clone() for k2, v in forced.items()})
    with pytest.warns(LayerCollapseWarning, match="lie on no path"):
        prune(model, "magnitude", sparsity=0.75, input_shape=(3,))  # keeps exactly the 7 forced


def _encoder() -> nn.Module:
    class Encoder(nn.Module):
        """A dense 2-layer ``nn.TransformerEncoder`` (post-norm LayerNorms) and a Linear head."""

        def __init__(self) -> None:
            super().__init__()
            layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(x).mean(1))

    torch.manual_seed(0)
    return Encoder()


def test_a_dense_transformer_encoder_is_never_flagged():
    """LayerNorm maps the all-ones probe to 0; the path network passes it as the identity, and a real
    sample of the scoring data is the probe where there is one."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 5, 8, generator=g), torch.randint(0, 3, (4,), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prune(_encoder(), "magnitude", [(x, y)], sparsity=0.0)
        prune(_encoder(), "magnitude", sparsity=0.0, input_shape=(5, 8))
        prune(_encoder(), "snip", [(x, y)], sparsity=0.0)
    model = _encoder()
    dense = Mask({n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(model).items()})
    for sample in (None, x[:1]):
        _, counts = paths_through_weights(model, dense, (5, 8), sample)
        assert all(bool((c != 0).any()) for c in counts.values())


def test_a_cut_feed_forward_block_of_a_transformer_is_flagged():
    """linear1 keeps only hidden unit 0, linear2 reads only unit 1: both are cut (the residual sum still
    connects the rest), with the all-ones probe and with a real sample alike."""
    model = _encoder()
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(model).items()}
    mask["encoder.layers.0.linear1.weight"][1:] = False
    mask["encoder.layers.0.linear2.weight"][:, :] = False
    mask["encoder.layers.0.linear2.weight"][:, 1] = True
    sample = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(1))
    for probe in (None, sample):
        assert disconnected_layers(model, Mask(mask), (5, 8), probe) == [
            "encoder.layers.0.linear1.weight",
            "encoder.layers.0.linear2.weight",
        ]
    mask["encoder.layers.0.linear2.weight"][:, 0] = True
    assert disconnected_layers(model, Mask(mask), (5, 8), sample) == []


def test_a_real_sample_decides_as_all_ones_on_homogeneous_nets():
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        masks = [torch.rand(s, generator=g) > 0.6 for s in ((4, 3), (4, 4), (2, 4))]
        sample = torch.randn(1, 3, generator=g)
        expected = disconnected_layers(_mlp(), _mask(*masks), (3,))
        assert disconnected_layers(_mlp(), _mask(*masks), (3,), sample) == expected
        _, ones = paths_through_weights(_mlp(), _mask(*masks), (3,))
        _, real = paths_through_weights(_mlp(), _mask(*masks), (3,), sample)
        assert all(torch.equal(ones[k] > 0, real[k] > 0) for k in ones)


def test_collapsed_or_cut_names_each_layer_once_and_reads_missing_fields_as_none():
    result = {"collapsed_layers": ["b.weight"], "disconnected_layers": ["a.weight", "b.weight"]}
    assert collapsed_or_cut(result) == ["b.weight", "a.weight"]
    assert run_collapsed(result)
    assert run_collapsed({"collapsed_layers": [], "disconnected_layers": ["c.weight"]})
    for clean in ({}, {"collapsed_layers": [], "disconnected_layers": []},
                  {"collapsed_layers": None, "disconnected_layers": float("nan")}):  # fmt: skip
        assert collapsed_or_cut(clean) == []
        assert not run_collapsed(clean)
