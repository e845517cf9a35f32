"""The sparse export: ``save_export``/``load_export`` give back the dense state_dict bit for bit, and
``initprune export RUN_DIR OUT`` writes a finished run's trained network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import initprune
from initprune import InitpruneError
from initprune.cli import main
from initprune.experiments import build_config, run_experiment
from initprune.export import export_metadata, load_export_mask
from initprune.models import create_model

_INT_OF = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: Tensor) -> Tensor:
    """The tensor's raw bits (so -0.0 differs from +0.0 and NaNs compare by payload)."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    return t.view(_INT_OF[t.element_size()])


def _same_bits(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert torch.equal(_bits(a[name]), _bits(b[name])), name


class Mixed(nn.Module):
    """Conv + BatchNorm (int64 counter buffer), a float64 layer, a bfloat16 layer, a tied pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.wide = nn.Linear(4 * 16, 300)  # 19,200 entries: int16 indices; conv has int16 too
        self.big = nn.Linear(300, 120)  # 36,000 entries: int32 indices
        self.tied_a = nn.Linear(120, 120)
        self.tied_b = nn.Linear(120, 120)
        self.tied_b.weight = self.tied_a.weight
        self.f64 = nn.Linear(120, 8).double()
        self.half = nn.Linear(8, 8).to(torch.bfloat16)
        self.head = nn.Linear(8, 3)


def _masked_trained(sparsity: float) -> tuple[nn.Module, initprune.Mask]:
    torch.manual_seed(0)
    model = Mixed()
    params = initprune.prunable_parameters(model)
    scores = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) for n, p in params.items()}
    mask = initprune.make_mask(scores, sparsity)
    handle = mask.hold(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    with torch.no_grad():  # stand-in for training: the held weights change, pruned ones stay 0
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)).to(p.dtype))
    loss = sum(p.float().square().sum() for p in model.parameters())
    loss.backward()
    opt.step()
    handle.remove()
    model.bn.running_mean.uniform_()
    model.bn.num_batches_tracked.fill_(7)
    return model, mask


@pytest.mark.parametrize("sparsity", [0.0, 0.9, 0.99])
def test_export_rebuilds_the_state_dict_bit_for_bit(tmp_path: Path, sparsity: float) -> None:
    model, mask = _masked_trained(sparsity)
    state = model.state_dict()
    size = initprune.save_export(model, mask, tmp_path / "m.safetensors", metadata={"note": "x"})
    assert size == (tmp_path / "m.safetensors").stat().st_size
    loaded = initprune.load_export(tmp_path / "m.safetensors")
    _same_bits(loaded, state)
    assert loaded["tied_a.weight"] is loaded["tied_b.weight"]  # the tie is one tensor again
    rebuilt = Mixed()
    rebuilt.load_state_dict(loaded)
    assert rebuilt.tied_a.weight is rebuilt.tied_b.weight
    _same_bits(rebuilt.state_dict(), state)
    masks = load_export_mask(tmp_path / "m.safetensors")
    assert set(masks) == set(mask) and all(torch.equal(masks[n], mask[n]) for n in mask)
    assert export_metadata(tmp_path / "m.safetensors")["note"] == "x"


def test_export_stores_kept_values_and_small_indices(tmp_path: Path) -> None:
    from safetensors import safe_open

    model, mask = _masked_trained(0.99)
    initprune.save_export(model, mask, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("wide.weight:indices").dtype == torch.int16
        assert f.get_tensor("big.weight:indices").dtype == torch.int32
        assert f.get_tensor("big.weight:values").numel() == int(mask["big.weight"].sum())
    assert "big.weight" not in keys and "head.weight" in keys and "tied_b.weight" not in keys
    dense = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    # kept entries cost value + index; at 0.99 the file is far below the dense tensors' bytes
    assert (tmp_path / "m.safetensors").stat().st_size < 0.2 * dense


def test_export_refuses_a_nonzero_pruned_value_and_writes_nothing(tmp_path: Path) -> None:
    model, mask = _masked_trained(0.9)
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"before")
    with torch.no_grad():
        model.big.weight[~mask["big.weight"]] = 1.0
    pruned = int((~mask["big.weight"]).sum())
    with pytest.raises(
        InitpruneError, match=rf"'big.weight' has {pruned} nonzero value\(s\) where the mask prunes"
    ):
        initprune.save_export(model, mask, target)
    assert target.read_bytes() == b"before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temporary left


def test_export_refuses_a_held_model_and_reads_only_exports(tmp_path: Path) -> None:
    model, mask = _masked_trained(0.9)
    handle = mask.hold(model)
    with pytest.raises(InitpruneError, match=r"call handle.remove\(\) before exporting"):
        initprune.save_export(model, mask, tmp_path / "m.safetensors")
    handle.remove()
    (tmp_path / "junk").write_bytes(b"not safetensors")
    with pytest.raises(InitpruneError, match="is not a readable safetensors file"):
        initprune.load_export(tmp_path / "junk")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InitpruneError, match="is not an initprune sparse export"):
        initprune.load_export(tmp_path / "other.safetensors")
    with pytest.raises(InitpruneError, match="does not exist"):
        initprune.load_export(tmp_path / "missing.safetensors")


SMALL = {
    "model": "lenet5",
    "dataset": "synthetic",
    "dataset_options": {"input_shape": [1, 28, 28], "train_size": 128, "test_size": 64, "num_classes": 4},
    "val_size": 32,
    "criterion": "snip",
    "sparsity": 0.9,
    "warmup_batches": 1,
    "scoring_per_class": 2,
    "batch_size": 32,
    "epochs": 1,
    "device": "cpu",
}


def test_cli_export_of_a_finished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    config = build_config({**SMALL, "out": str(run)})
    assert main(["export", str(run), str(tmp_path / "x.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    result = run_experiment(config, progress=False)
    assert result["pruned_weights_stayed_zero"]
    out = tmp_path / "exports" / "lenet5.safetensors"
    assert main(["export", str(run), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "of the dense model's" in printed

    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    loaded = initprune.load_export(out)
    _same_bits(loaded, checkpoint["model"])  # bit for bit, pruned zeros included (+0.0)
    mask = initprune.Mask.load(run / "mask.pt")
    assert all(torch.equal(load_export_mask(out)[n], mask[n]) for n in mask)
    meta = export_metadata(out)
    settings = json.loads(meta["settings"])
    assert settings["model"] == "lenet5" and meta["settings_hash"] == result["settings_hash"]
    model = create_model(settings["model"], num_classes=4, in_channels=1, **settings["model_options"])
    model.load_state_dict(loaded)
    x = torch.randn(5, 1, 28, 28)
    reference = create_model("lenet5", num_classes=4, in_channels=1)
    reference.load_state_dict(checkpoint["model"])
    assert torch.equal(F.softmax(model(x), 1), F.softmax(reference(x), 1))

    (run / "result.json").unlink()
    assert main(["export", str(run), str(out)]) == 2
    assert "holds no finished run" in capsys.readouterr().err
