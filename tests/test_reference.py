"""The reference-code reproduction options and prune after training: each does what it says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from initprune import InitpruneError, make_mask, prune, score
from initprune.curvature import hutchinson_diagonal
from initprune.errors import LayerCollapseWarning
from initprune.experiments import build_config, run_experiment
from initprune.experiments import run as run_module
from initprune.masks import Mask
from initprune.models import create_model
from initprune.prunable import prunable_parameters
from initprune.pruning import round_densities

from .reference import cat, exact_hessian, mean_loss_fn, split
from .test_experiments import SMALL, TIMING

# ---------------------------------------------------------------- GraSP as the reference code runs it


def _reference_grasp(model: nn.Module, data) -> dict[str, torch.Tensor]:
    """−θ ⊙ (H g) at T = 1 with g and H over every parameter, read off on the prunable weights."""
    model.eval()
    every = [n for n, _ in model.named_parameters()]
    x, y = cat(data)
    loss, flat, shapes, sizes = mean_loss_fn(model, every, x, y, 1.0)
    g = torch.func.grad(loss)(flat)
    hg = split(exact_hessian(model, every, x, y, 1.0) @ g, every, shapes, sizes)
    params = dict(model.named_parameters())
    return {n: -params[n].detach() * hg[n] for n in prunable_parameters(model)}


def test_grasp_reference_options_keep_the_largest_minus_theta_hg_over_all_parameters(convnet, conv_data):
    options = {"reference_sign": True, "hvp_scope": "all", "temperature": 1.0}
    got = score(convnet, "grasp", conv_data, **options)
    ref = _reference_grasp(convnet, conv_data)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-6, atol=1e-18)
    kept = make_mask(got, 0.6)
    flat = torch.cat([ref[n].reshape(-1) for n in ref])
    k = round(0.4 * flat.numel())
    threshold = flat.topk(k).values[-1]
    for n in ref:
        assert torch.equal(kept[n], ref[n] >= threshold)
    # each option on its own changes the scores: the test fails if one is ignored
    prunable_only = score(convnet, "grasp", conv_data, reference_sign=True, temperature=1.0)
    assert any(not torch.allclose(prunable_only[n], ref[n]) for n in ref)
    default_sign = score(convnet, "grasp", conv_data, hvp_scope="all", temperature=1.0)
    for n in ref:
        torch.testing.assert_close(default_sign[n], -got[n], rtol=1e-12, atol=0)


def test_grasp_options_reject_bad_values(convnet, conv_data):
    with pytest.raises(InitpruneError, match=r"hvp_scope='some' is invalid; valid: one of prunable, all"):
        score(convnet, "grasp", conv_data, hvp_scope="some")
    with pytest.raises(InitpruneError, match=r"reference_sign='yes' is invalid; valid: true or false"):
        score(convnet, "grasp", conv_data, reference_sign="yes")


def test_grasp_with_every_parameter_leaves_the_model_as_it_was(convnet, conv_data):
    convnet.train()
    convnet[1].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in convnet.state_dict().items()}
    score(convnet, "grasp", conv_data, hvp_scope="all")
    assert convnet.training and not convnet[1].weight.requires_grad
    assert all(torch.equal(before[k], v) for k, v in convnet.state_dict().items())


# ---------------------------------------------------------------- SynFlow's schedule read as sparsity


def test_sparsity_schedule_reads_the_density_schedule_as_sparsity():
    s, rounds = 0.9, 100
    densities = round_densities(s, rounds, "sparsity")
    assert densities[0] == pytest.approx(1 - s ** (1 / rounds), rel=1e-12)
    assert 1 - densities[0] > 0.998  # round 0 already prunes to 99.9 %
    assert densities[-1] == pytest.approx(1 - s, rel=1e-12)
    assert round_densities(s, rounds)[0] == pytest.approx((1 - s) ** (1 / rounds), rel=1e-12)
    with pytest.raises(InitpruneError, match=r"round_schedule 'linear'; valid: density, sparsity"):
        round_densities(s, rounds, "linear")


def _reference_synflow_loop(model: nn.Module, sparsity: float, rounds: int) -> dict[str, torch.Tensor]:
    """The reference code's prune_loop: fresh top-k of each round's scores at s^((t+1)/R), weights zeroed
    between rounds, the originals restored at the end, the last round's mask returned."""
    params = prunable_parameters(model)
    originals = {n: p.detach().clone() for n, p in params.items()}
    for t in range(rounds):
        scores = score(model, "synflow", input_shape=(6,), prunable=params)
        flat = torch.cat([scores[n].reshape(-1) for n in params])
        k = max(1, int((1 - sparsity ** ((t + 1) / rounds)) * flat.numel()))
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[torch.topk(flat, k, sorted=False).indices] = True
        mask, offset = {}, 0
        for n, p in params.items():
            mask[n] = keep[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        with torch.no_grad():
            for n, p in params.items():
                p.mul_(mask[n])
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(originals[n])
    return mask


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 40),
        nn.ReLU(),
        nn.Linear(40, 40),
        nn.ReLU(),
        nn.Linear(40, 40),
        nn.ReLU(),
        nn.Linear(40, 3),
    )


def test_synflow_sparsity_schedule_is_the_reference_loop():
    sparsity, rounds = 0.9, 20
    expected = _reference_synflow_loop(_mlp(), sparsity, rounds)
    model = _mlp()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.warns(Warning):  # the reference loop collapses this network
        mask = prune(
            model, "synflow", sparsity=sparsity, rounds=rounds, input_shape=(6,), round_schedule="sparsity"
        )
    assert set(mask) == set(expected)
    for n in mask:
        assert torch.equal(mask[n], expected[n])
    total = sum(m.numel() for m in mask.values())
    assert mask.num_kept == int((1 - sparsity) * total)
    # the kept weights hold their initial values (restored), the pruned ones are zero
    for n, p in model.named_parameters():
        if n in mask:
            assert torch.equal(p.detach(), init[n] * mask[n])
    # and it is not initprune's schedule
    default = prune(_mlp(), "synflow", sparsity=sparsity, rounds=rounds, input_shape=(6,))
    assert any(not torch.equal(default[n], mask[n]) for n in mask)


def test_the_sparsity_schedule_takes_no_erk_scope():
    with pytest.raises(InitpruneError, match="valid: global, layerwise"):
        prune(
            _mlp(),
            "synflow",
            sparsity=0.5,
            rounds=2,
            input_shape=(6,),
            scope="erk",
            round_schedule="sparsity",
        )


# ---------------------------------------------------------------- Hutchinson probing every parameter


def test_probe_scope_all_probes_every_parameter_as_the_estimator_it_is_tested_against(convnet, conv_data):
    """hutch_diag(probe_scope=all) is the Hutchinson estimate whose probes span every parameter, BatchNorm
    and biases included (checked against the formula in test_curvature), like the reference code's."""
    got = score(convnet, "hutch_diag", conv_data, probe_scope="all", probes=2, chunk_size=4, seed=3)
    params = prunable_parameters(convnet)
    convnet.eval()
    every = {n: p for n, p in convnet.named_parameters()}
    ref = hutchinson_diagonal(
        convnet,
        params,
        conv_data,
        probes=2,
        temperature=200.0,
        chunk_size=4,
        seed=3,
        probe_params=every,
    )
    only = score(convnet, "hutch_diag", conv_data, probes=2, chunk_size=4, seed=3)
    for n in params:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=0)
    assert any(not torch.allclose(only[n], got[n]) for n in params)


# ---------------------------------------------------------------- shortcut BatchNorm scales


def test_shortcut_bn_scales_enter_the_prunable_set_only_with_the_option():
    model = create_model("resnet20", width=0.25)
    default = prunable_parameters(model)
    added = prunable_parameters(model, shortcut_bn_scales=True)
    shortcut_bns = {f"layer{i}.0.shortcut.1.weight" for i in (2, 3)}
    assert not shortcut_bns & set(default)
    assert set(added) == set(default) | shortcut_bns
    assert list(added) == [
        n for n, _ in model.named_parameters() if n in added
    ]  # model order, as the reference
    vgg = create_model("vgg11", width=0.25)
    assert prunable_parameters(vgg, shortcut_bn_scales=True).keys() == prunable_parameters(vgg).keys()


def test_shortcut_bn_scales_are_pruned_in_the_global_top_k():
    model = create_model("resnet20", width=0.25, in_channels=1)
    with torch.no_grad():
        model.layer2[0].shortcut[1].weight.fill_(1e-3)  # the smallest magnitudes of the network
    with pytest.warns(LayerCollapseWarning, match="layer2.0.shortcut.1.weight"):
        mask = prune(model, "magnitude", sparsity=0.5, shortcut_bn_scales=True, input_shape=(1, 8, 8))
    assert not mask["layer2.0.shortcut.1.weight"].any()
    assert not model.layer2[0].shortcut[1].weight.detach().any()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g))]
    resnet = create_model("resnet20", width=0.25, in_channels=1)
    options = {"probes": 1, "probe_scope": "all", "shortcut_bn_scales": True}
    hp = prune(resnet, "hutch_pruner", data, sparsity=0.5, **options)
    assert "layer3.0.shortcut.1.weight" in hp


# ---------------------------------------------------------------- PyTorch's default initialization


def test_reference_vgg_has_conv_biases_and_pytorch_default_initialization():
    torch.manual_seed(0)
    ref = create_model("vgg11", init="pytorch", conv_bias=True)
    torch.manual_seed(0)
    ours = create_model("vgg11")
    ref_convs = [m for m in ref.modules() if isinstance(m, nn.Conv2d)]
    our_convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is not None and c.bias.abs().max() > 0 for c in ref_convs)
    assert all(c.bias is None for c in our_convs)
    for r, o in zip(ref_convs, our_convs, strict=True):
        fan_in = r.weight[0].numel()
        fan_out = r.weight.shape[0] * r.weight[0, 0].numel()
        assert r.weight.abs().max() <= 1 / math.sqrt(fan_in)  # PyTorch's U(±1/√fan_in)
        assert float(r.weight.detach().std()) == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.15)
        assert float(o.weight.detach().std()) == pytest.approx(
            math.sqrt(2 / fan_out), rel=0.15
        )  # Kaiming fan-out
    # the classifier keeps PyTorch's default too, not N(0, 0.01²)
    assert float(ref.classifier.weight.abs().max()) > 3 * 0.01 or ref.classifier.bias.abs().max() > 0


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_resnets_take_the_pytorch_initialization(name):
    torch.manual_seed(0)
    model = create_model(name, width=0.25, init="pytorch")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.abs().max() <= 1 / math.sqrt(m.weight[0].numel())


def test_init_options_reject_bad_values():
    with pytest.raises(InitpruneError, match=r"unknown init 'xavier'; valid: kaiming, pytorch"):
        create_model("vgg11", init="xavier")
    with pytest.raises(InitpruneError, match="conv_bias must be true or false"):
        create_model("vgg11", conv_bias="yes")


# ---------------------------------------------------------------- runs: best epoch on the test set, PaT


def _config(out, **changes):
    return build_config({**SMALL, "out": str(out), **changes})


def test_select_best_on_test_reports_the_best_test_epoch_with_all_training_images(tmp_path):
    config = _config(tmp_path / "run", val_size=0, select_best_on_test=True, epochs=3, criterion="magnitude")
    result = run_experiment(config, progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    accuracies = [r["test_accuracy"] for r in history]
    assert len(accuracies) == 3 and result["val_accuracy"] is None
    assert result["test_accuracy_selection"] == "best_epoch_on_test"
    assert result["best_test_epoch"] == accuracies.index(max(accuracies)) + 1
    assert result["test_accuracy"] == max(accuracies)
    assert result["final_test_accuracy"] == accuracies[-1]
    plain = run_experiment(
        _config(tmp_path / "plain", val_size=0, epochs=3, criterion="magnitude"), progress=False
    )
    assert plain["test_accuracy_selection"] == "final_epoch" and "best_test_epoch" not in plain
    assert plain["test_accuracy"] == accuracies[-1]  # the same training; only the reported epoch differs


def test_prune_after_training_prunes_the_trained_network_by_magnitude_and_retrains_it(tmp_path):
    out = tmp_path / "pat"
    result = run_experiment(
        _config(out, criterion="magnitude", prune_after_training=True, epochs=1), progress=False
    )
    assert result["criterion"] == "magnitude" and result["prune_after_training"] is True
    assert result["warmup_batches"] == 0 and 0 <= result["dense_test_accuracy"] <= 1
    assert (out / "dense" / "checkpoint.pt").exists() and (out / "dense" / "metrics.jsonl").exists()
    trained = torch.load(out / "dense" / "checkpoint.pt", weights_only=True)["model"]
    mask = Mask.load(out / "mask.pt")
    expected = make_mask({n: trained[n].abs() for n in mask}, 0.9, "global")
    pruned = torch.load(out / "pruned_init.pt", weights_only=True)["model"]  # the run-stamped wrapper
    for n in mask:
        assert torch.equal(mask[n], expected[n])
        assert torch.equal(pruned[n], trained[n] * mask[n])  # the trained weights, not the initialization
    bn = "layer1.0.bn1.running_var"
    assert torch.equal(pruned[bn], trained[bn])  # no warmup over the trained statistics
    assert result["sparsity"] == pytest.approx(0.9, abs=1e-3) and result["pruned_weights_stayed_zero"]


def test_prune_after_training_resumes_in_either_phase(tmp_path, monkeypatch):
    changes = {"criterion": "magnitude", "prune_after_training": True, "epochs": 2}
    whole = run_experiment(_config(tmp_path / "whole", **changes), progress=False)

    real_prune, real_train = run_module.prune, run_module.train

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "prune", stop)  # after the dense phase, before pruning
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(tmp_path / "cut", **changes), progress=False)
    monkeypatch.setattr(run_module, "prune", real_prune)

    def killed_after_first_retraining_epoch(*args, on_epoch_end=None, **kwargs):
        if on_epoch_end is None:  # the dense phase: finished already, read back from its checkpoint
            return real_train(*args, **kwargs)

        def hook(record):
            on_epoch_end(record)
            if record["epoch"] == 1:
                raise KeyboardInterrupt

        return real_train(*args, on_epoch_end=hook, **kwargs)

    monkeypatch.setattr(run_module, "train", killed_after_first_retraining_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(tmp_path / "cut", **changes), progress=False)
    monkeypatch.setattr(run_module, "train", real_train)
    monkeypatch.setattr(run_module, "prune", lambda *a, **k: pytest.fail("scoring must not run again"))
    resumed = run_experiment(_config(tmp_path / "cut", **changes), progress=False)
    assert {k: v for k, v in resumed.items() if k not in TIMING | {"dense_train_seconds"}} == {
        k: v for k, v in whole.items() if k not in TIMING | {"dense_train_seconds"}
    }


def test_a_stored_config_without_the_new_keys_is_the_same_run(tmp_path):
    config = _config(tmp_path / "run", epochs=1, criterion="magnitude")
    result = run_experiment(config, progress=False)
    path = tmp_path / "run" / "config.yaml"
    stored = yaml.safe_load(path.read_text())
    for key in ("prune_after_training", "shortcut_bn_scales", "round_schedule", "select_best_on_test"):
        del stored[key]
    path.write_text(yaml.safe_dump(stored, sort_keys=False))
    assert run_experiment(config, progress=False) == result
    with pytest.raises(InitpruneError, match="differing: prune_after_training"):
        run_experiment(_config(tmp_path / "run", epochs=1, criterion="magnitude", prune_after_training=True))
    assert (
        config.identity()
        == build_config({k: v for k, v in config.to_dict().items() if k in SMALL}).identity()
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("round_schedule", "linear", "round_schedule 'linear'; valid: density, sparsity"),
        ("prune_after_training", "maybe", "prune_after_training must be true or false"),
        ("select_best_on_test", 1, "select_best_on_test must be true or false"),
        ("shortcut_bn_scales", None, "shortcut_bn_scales must be true or false"),
    ],
)
def test_new_run_settings_reject_bad_values(tmp_path, key, value, message):
    with pytest.raises(InitpruneError, match=message):
        _config(tmp_path, **{key: value})


# ---------------------------------------------------------------- the presets

_CONFIGS = Path(__file__).parent.parent / "configs"
_REFERENCE_KEYS = {"val_size", "model_options", "criterion_options", "round_schedule", "shortcut_bn_scales",
                   "select_best_on_test", "scoring_redraw", "warmup_augment", "warmup_shuffle",
                   "train_shuffle", "dataset_options"}  # fmt: skip


@pytest.mark.parametrize("path", sorted((_CONFIGS / "paper_reference").glob("*.yaml")), ids=lambda p: p.name)
def test_each_reference_preset_is_its_paper_preset_with_every_reproduction_option(path):
    from initprune.experiments import load_config_file

    ref = build_config(load_config_file(path), str(path))
    paper = build_config(load_config_file(_CONFIGS / "paper" / path.name), path.name)
    resnet = ref.model.startswith("resnet")
    assert ref.val_size == 0 and ref.select_best_on_test and ref.round_schedule == "sparsity"
    assert ref.model_options == ({"init": "pytorch"} if resnet else {"init": "pytorch", "conv_bias": True})
    assert ref.criterion_options == {"probe_scope": "all"} and ref.shortcut_bn_scales == resnet
    assert ref.scoring_redraw and ref.warmup_augment and not ref.warmup_shuffle
    assert ref.train_shuffle == (not ref.dataset.startswith("cifar"))  # its CIFAR loader does not shuffle
    reference_std = ref.dataset in ("cifar10", "tinyimagenet")
    assert ref.dataset_options.get("reference_std", False) == reference_std
    differing = {k for k, v in ref.to_dict().items() if paper.to_dict()[k] != v}
    assert differing <= _REFERENCE_KEYS
    assert "reference code" in path.read_text().splitlines()[0].lower()
    assert "corrected setting" in (_CONFIGS / "paper" / path.name).read_text().splitlines()[0]


def test_cli_flags_of_prune_after_training_and_the_reference_protocol(tmp_path, capsys):
    from initprune.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "epochs": 1, "criterion": "magnitude"}))
    argv = ["run", "--config", str(config), "--quiet", "--prune-after-training", "--select-best-on-test"]
    assert main([*argv, "--val-size", "0", "--out", str(tmp_path / "o")]) == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["prune_after_training"] and result["test_accuracy_selection"] == "best_epoch_on_test"
    printed = capsys.readouterr().out
    assert "pruned after training" in printed and "chosen on the test set" in printed


def test_prune_after_training_does_not_share_cached_scores(tmp_path):
    config = _config(tmp_path / "pat", criterion="magnitude", prune_after_training=True, epochs=1)
    run_experiment(config, progress=False, score_cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.pt"))
