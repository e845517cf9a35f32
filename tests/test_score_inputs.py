"""Bad scoring data and bad criterion options: one clear error naming the value, before anything runs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import initprune
from initprune import InitpruneError, prune, score
from initprune.scores import OptionSpec, register
from initprune.scores.registry import option_specs

from .conftest import tiny_convnet

ROOT = Path(__file__).resolve().parent.parent
CRITERIA = list(initprune.criteria())


def _data(n: int = 6):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 2, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[:4], y[:4]), (x[4:], y[4:])]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return tiny_convnet().double()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------------------
# Scoring data


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize(
    ("value", "word"), [(math.nan, "NaN"), (math.inf, "infinity"), (-math.inf, "infinity")]
)
def test_non_finite_inputs_name_the_batch_and_the_input(criterion, value, word):
    data = _data()
    data[1][0][1, 0, 2, 3] = value
    with pytest.raises(InitpruneError, match=rf"batch 1, input 1 \(of 2\) contains {word}"):
        score(_model(), criterion, data)


@pytest.mark.parametrize("label", [3, -1, 100])
def test_labels_outside_the_classes_name_the_label_and_the_valid_range(label):
    data = _data()
    data[0][1][2] = label
    with pytest.raises(
        InitpruneError,
        match=rf"batch 0, input 2 has label {label}; valid labels are 0 to 2 \(the model returns 3",
    ):
        score(_model(), "fisher_diag", data)


def test_targets_must_be_integer_class_indices():
    x, y = _data()[0]
    with pytest.raises(InitpruneError, match=r"batch 0 has targets of dtype torch.float64 and shape \(4,\)"):
        score(_model(), "snip", (x, y.double()))
    with pytest.raises(InitpruneError, match=r"targets of dtype torch.int64 and shape \(4, 1\)"):
        score(_model(), "snip", [(x, y[:, None])])


def test_inputs_of_the_wrong_shape_name_the_shape_and_the_model():
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    expected = (
        r"inputs of batch 0 \(shape \(4, 3, 6, 6\), dtype torch.float64\) do not fit model Sequential: "
    )
    with pytest.raises(InitpruneError, match=expected + ".*channels"):
        score(_model(), "fisher_diag", (x, y))
    data = _data()
    data[1] = (torch.randn(2, 2, 5, 5, dtype=torch.float64), data[1][1])  # a second shape, checked on its own
    with pytest.raises(InitpruneError, match=r"inputs of batch 1 \(shape \(2, 2, 5, 5\)"):
        score(_model(), "snip", data)


def test_a_model_that_does_not_return_logits_is_named():
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 3), nn.Flatten(0)).double()
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.zeros(5, dtype=torch.long)
    with pytest.raises(
        InitpruneError, match=r"must return logits of shape \(batch, classes\).*returned \(3,\)"
    ):
        score(model, "snip", (x, y))


def test_prune_checks_the_data_before_the_warmup_changes_the_model():
    model = _model()
    before = _state(model)
    data = _data()
    data[0][0][0, 0, 0, 0] = math.nan
    with pytest.raises(InitpruneError, match="batch 0, input 0"):
        prune(model, "snip", data, sparsity=0.5, warmup_batches=1)
    assert _unchanged(model, before)


# ------------------------------------------------------------------------------------------------------
# Criterion options


BAD_OPTIONS = [
    ("snip", "temperature", -1, "a finite number > 0"),
    ("snip", "temperature", 0, "a finite number > 0"),
    ("snip", "temperature", 0.0, "a finite number > 0"),
    ("grasp", "temperature", math.inf, "a finite number > 0"),
    ("grasp", "temperature", math.nan, "a finite number > 0"),
    ("fisher_diag", "temperature", "abc", "a finite number > 0"),
    ("fisher_diag", "temperature", True, "a finite number > 0"),
    ("hutch_diag", "probes", 2.5, "an integer >= 1"),
    ("hutch_diag", "probes", 2.0, "an integer >= 1"),
    ("hutch_diag", "probes", 0, "an integer >= 1"),
    ("hutch_diag", "probes", "abc", "an integer >= 1"),
    ("hutch_diag", "probes", True, "an integer >= 1"),
    ("hutch_diag", "chunk_size", 0, "an integer >= 1 or None"),
    ("fisher_diag", "chunk_size", 0, "an integer >= 1 or None"),
    ("ggn_diag", "chunk_size", 1.5, "an integer >= 1 or None"),
    ("ggn_diag", "chunk_size", "all", "an integer >= 1 or None"),
    ("hutch_pruner", "probe_scope", "some", "one of prunable, all"),
    ("hutch_pruner", "probe_scope", None, "one of prunable, all"),
    ("fisher_mc_diag", "samples", 0, "an integer >= 1"),
    ("fisher_mc_diag", "samples", False, "an integer >= 1"),
    ("fisher_mc_pruner", "temperature", -2.0, "a finite number > 0"),
]


@pytest.mark.parametrize(("criterion", "option", "value", "valid"), BAD_OPTIONS)
def test_bad_option_values_name_the_option_the_value_and_what_is_valid(criterion, option, value, valid):
    message = f"criterion '{criterion}': option {option}={value!r} is invalid; valid: {valid}"
    with pytest.raises(InitpruneError) as raised:
        score(_model(), criterion, _data(), **{option: value})
    assert str(raised.value) == message
    model = _model()
    before = _state(model)
    with pytest.raises(InitpruneError, match="is invalid; valid"):
        prune(model, criterion, _data(), sparsity=0.5, warmup_batches=1, **{option: value})
    assert _unchanged(model, before)


@pytest.mark.parametrize(
    ("criterion", "options"),
    [
        ("snip", {"temperature": 2}),  # an int is a number
        ("fisher_diag", {"chunk_size": None, "temperature": 0.5}),
        ("hutch_diag", {"probes": 1, "chunk_size": 2, "probe_scope": "all"}),
        ("fisher_mc_diag", {"samples": 3}),
    ],
)
def test_good_option_values_are_accepted(criterion, options):
    initprune.get_criterion(criterion).check_options(options)
    scores = score(_model(), criterion, _data(), **options)
    assert all(torch.isfinite(s).all() for s in scores.values())


def test_every_option_of_every_criterion_declares_its_type_and_range():
    for name in CRITERIA:
        crit = initprune.get_criterion(name)
        assert crit.options.keys() == crit.option_specs.keys()
        for option, default in crit.options.items():
            assert crit.option_specs[option].accepts(default), (name, option)


def test_an_undeclared_option_is_refused_at_registration():
    def scorer(ctx, *, strength: list | None = None):
        return {}

    with pytest.raises(TypeError, match="option 'strength' of scorer must be annotated with bool, int"):
        register("undeclared", "test", needs_data=False)(scorer)
    assert "undeclared" not in initprune.criteria()


def test_a_plain_annotation_declares_the_type_alone():
    def scorer(ctx, *, sign: bool = False, scope: str = "a", scale: float | None = None, k: int = 1):
        return {}

    specs = {name: spec for name, (_, spec) in option_specs(scorer).items()}
    assert specs == {
        "sign": OptionSpec(bool),
        "scope": OptionSpec(str),
        "scale": OptionSpec(float, none=True),
        "k": OptionSpec(int),
    }
    assert specs["sign"].accepts(True) and not specs["sign"].accepts(1) and not specs["sign"].accepts("false")
    assert specs["sign"].describe() == "true or false" and specs["scope"].describe() == "a string"
    assert specs["scale"].accepts(None) and specs["scale"].accepts(-2) and not specs["scale"].accepts("x")


def test_option_spec_words():
    assert OptionSpec(float, minimum=0.0, exclusive=True).describe() == "a finite number > 0"
    assert OptionSpec(int, minimum=1, none=True).describe() == "an integer >= 1 or None"
    assert option_specs(initprune.get_criterion("hutch_diag").fn)["probe_scope"][0] == "prunable"


def test_the_command_refuses_a_bad_option_in_one_line_before_writing(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for option, valid in (("temperature=abc", "a finite number > 0"), ("probes=2.5", "an integer >= 1")):
        criterion = "hutch_pruner"
        done = subprocess.run(
            [sys.executable, "-m", "initprune.cli", "run", "--criterion", criterion, "--dataset", "synthetic",
             "--criterion-options", option, "--out", str(out), "--quiet"],
            capture_output=True, text=True, check=False, env=env, cwd=tmp_path,
        )  # fmt: skip
        key, value = option.split("=")
        shown = repr(value) if key == "temperature" else value
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1
        assert f"option {key}={shown} is invalid; valid: {valid}" in done.stderr
        assert not out.exists()


def test_the_command_reads_numbers_in_exponent_form_as_numbers():
    from initprune.cli import _key_value

    assert _key_value("temperature=1e-3") == ("temperature", 0.001)
    assert _key_value("temperature=2E2") == ("temperature", 200.0)
    assert _key_value("temperature=abc") == ("temperature", "abc")
    initprune.get_criterion("snip").check_options(dict([_key_value("temperature=1e-3")]))
