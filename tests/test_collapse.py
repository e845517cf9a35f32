"""Path counting and disconnected layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from initprune import LayerCollapseWarning, Mask, prune
from initprune.collapse import disconnected_layers, paths_through_weights


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
