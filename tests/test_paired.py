"""Paired comparisons of `initprune report`: the t distribution against closed forms and the t table, the
paired interval and the corrections against hand computations, pairing of runs, and the command."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from initprune.cli import main
from initprune.errors import InitpruneError
from initprune.experiments.paired import (
    Comparison,
    compare,
    comparisons_markdown,
    load_comparisons,
    lower_is_better,
    parse_selector,
)
from initprune.stats import adjust, incomplete_beta, paired_stats, t_cdf, t_quantile


def _t3_cdf(t: float) -> float:
    """Student's t with 3 degrees of freedom in closed form."""
    r = t / math.sqrt(3)
    return 0.5 + (r / (1 + r * r) + math.atan(r)) / math.pi


@pytest.mark.parametrize("t", [-5.0, -1.3, 0.0, 0.4, 2.0, 3.872983346207417, 12.0])
def test_t_cdf_matches_closed_forms(t):
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
    assert t_cdf(t, 3) == pytest.approx(_t3_cdf(t), abs=1e-13)


# two-sided 95 % critical values of the t table (6 decimals)
TABLE = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 9: 2.262157, 10: 2.228139,
         29: 2.045230, 30: 2.042272, 120: 1.979930}  # fmt: skip


@pytest.mark.parametrize("df", sorted(TABLE))
def test_t_quantile_matches_the_table(df):
    assert t_quantile(0.975, df) == pytest.approx(TABLE[df], abs=1e-6)
    assert t_quantile(0.025, df) == pytest.approx(-TABLE[df], abs=1e-6)
    assert t_cdf(t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-12)


def test_t_quantile_closed_forms_and_normal_limit():
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-12)
    p = 0.975
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)  # the normal quantile


def test_incomplete_beta_known_values():
    assert incomplete_beta(1.0, 1.0, 0.3) == pytest.approx(0.3, abs=1e-14)  # uniform
    assert incomplete_beta(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-12)  # polynomial: 1-(1-x)^3(1+3x)
    assert incomplete_beta(0.5, 0.5, 0.25) == pytest.approx(2 / math.pi * math.asin(0.5), abs=1e-13)
    with pytest.raises(InitpruneError, match="x in"):
        incomplete_beta(1.0, 1.0, 1.5)


def test_paired_interval_by_hand():
    stats = paired_stats([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, s = sqrt(5/3), se = s/2, t_{0.975,3} = 3.182446
    se = math.sqrt(5 / 3) / 2
    assert stats.n == 4 and stats.mean == pytest.approx(2.5)
    assert stats.std == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
    assert stats.low == pytest.approx(2.5 - 3.182446 * se, abs=1e-5)
    assert stats.high == pytest.approx(2.5 + 3.182446 * se, abs=1e-5)
    assert stats.t == pytest.approx(2.5 / se)
    assert stats.p == pytest.approx(2 * (1 - _t3_cdf(2.5 / se)), abs=1e-12)
    # n = 3 with one opposite sign: the interval holds 0
    wide = paired_stats([0.9, 1.1, -0.2])
    assert wide.low < 0 < wide.high and wide.p > 0.05
    single = paired_stats([1.0])
    assert single.n == 1 and math.isnan(single.low) and single.p == 1.0


def test_holm_and_bonferroni_by_hand():
    assert adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert adjust([0.01, 0.04, 0.03], "bonferroni") == pytest.approx([0.03, 0.12, 0.09])
    assert adjust([0.01, 0.04], "none") == [0.01, 0.04]
    assert adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    with pytest.raises(InitpruneError, match=r"'sidak'.*holm"):
        adjust([0.1], "sidak")


def test_parse_selector():
    assert parse_selector("criterion=hutch_pruner,sparsity=0.99") == {
        "criterion": "hutch_pruner",
        "sparsity": 0.99,
    }
    assert parse_selector("criterion_options.probes=1, warmup_batches=null") == {
        "criterion_options.probes": 1,
        "warmup_batches": None,
    }
    with pytest.raises(InitpruneError, match="'criterion' is not KEY=VALUE"):
        parse_selector("criterion")


def _row(criterion, sparsity, seed, acc, **extra):
    config = {"criterion": criterion, "sparsity": sparsity, "seed": seed, "warmup_batches": 20, **extra}
    return {**config, "test_accuracy": acc, "run": f"{criterion}-{sparsity}-{seed}-{extra}",
            "_config_keys": sorted(config)}  # fmt: skip


ROWS = [
    _row("hp", 0.99, 0, 0.80), _row("hp", 0.99, 1, 0.82), _row("hp", 0.99, 2, 0.81),
    _row("sf", 0.99, 0, 0.78), _row("sf", 0.99, 1, 0.797), _row("sf", 0.99, 2, 0.792),
    _row("hp", 0.9, 0, 0.90), _row("sf", 0.9, 0, 0.91),
    _row("hp", 0.99, 0, 0.70, warmup_batches=0), _row("sf", 0.99, 3, 0.50),
]  # fmt: skip


def test_compare_pairs_by_seed_and_settings():
    comparison = Comparison({"criterion": "hp"}, {"criterion": "sf"}, {"sparsity": 0.99})
    (result,) = compare(ROWS, [comparison])
    # the warmup_batches=0 run has no partner, seed 3 has no HP run: three pairs
    assert result["n"] == 3 and result["seeds"] == [0, 1, 2]
    assert [p["difference"] for p in result["pairs"]] == pytest.approx([2.0, 2.3, 1.8])
    assert result["mean"] == pytest.approx(6.1 / 3)
    s = math.sqrt(sum((d - 6.1 / 3) ** 2 for d in (2.0, 2.3, 1.8)) / 2)
    assert result["low"] == pytest.approx(6.1 / 3 - TABLE[2] * s / math.sqrt(3), abs=1e-5)
    assert result["verdict"] == "held" and result["p_adjusted"] == result["p"]
    assert result["varying"] == []
    # without the filter the 0.9 pair joins and the pairs span two sparsities
    (spanning,) = compare(ROWS, [Comparison({"criterion": "hp"}, {"criterion": "sf"})])
    assert spanning["n"] == 4 and spanning["varying"] == ["sparsity"]
    reverse = compare(ROWS, [Comparison({"criterion": "sf"}, {"criterion": "hp"}, {"sparsity": 0.99})])
    assert reverse[0]["verdict"] == "not held"


def test_correction_can_undecide():
    rows = [_row("a", 0.9, s, 0.5 + d) for s, d in enumerate([0.010, 0.030, 0.020])]
    rows += [_row("b", 0.9, s, 0.5) for s in range(3)]
    one = [Comparison({"criterion": "a"}, {"criterion": "b"})]
    (alone,) = compare(rows, one, alpha=0.1)
    assert alone["verdict"] == "held"  # mean 2, s 1, t = 2√3, p = 0.074
    assert alone["p"] == pytest.approx(0.0742, abs=1e-4)
    assert alone["p"] == pytest.approx(2 * (1 - t_cdf(2 / (1 / math.sqrt(3)), 2)))
    many = compare(rows, one * 3, correction="bonferroni", alpha=0.1)
    assert all(m["p_adjusted"] == pytest.approx(min(1.0, 3 * alone["p"])) for m in many)
    assert all(m["verdict"] == "undecided" for m in many)


def test_pairs_in_numeric_seed_order():
    rows = [_row(c, 0.9, seed, 0.5 + 0.001 * seed) for c in ("a", "b") for seed in (123, 0, 42)]
    (result,) = compare(rows, [Comparison({"criterion": "a"}, {"criterion": "b"})])
    assert result["seeds"] == [0, 42, 123]


def test_compare_errors():
    with pytest.raises(InitpruneError, match=r"A names 'critrion', which no run has; .*criterion"):
        compare(ROWS, [Comparison({"critrion": "hp"}, {"criterion": "sf"})])
    with pytest.raises(InitpruneError, match="pairs no runs"):
        compare(ROWS, [Comparison({"criterion": "hp"}, {"criterion": "nope"})])
    duplicate = [*ROWS, _row("hp", 0.99, 0, 0.1)]
    with pytest.raises(InitpruneError, match="both match side A"):
        compare(duplicate, [Comparison({"criterion": "hp"}, {"criterion": "sf"}, {"sparsity": 0.99})])


def test_load_comparisons(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"where": "sparsity=0.99", "correction": "bonferroni", "comparisons": [
        {"name": "HP over SynFlow", "a": "criterion=hp", "b": {"criterion": "sf"}},
        {"a": "criterion=hp", "b": "criterion=sf", "where": "sparsity=0.9"}]}))  # fmt: skip
    comparisons, options = load_comparisons(path)
    assert options == {"correction": "bonferroni"}
    assert comparisons[0].where == {"sparsity": 0.99} and comparisons[0].label() == "HP over SynFlow"
    assert comparisons[1].where == {"sparsity": 0.9}
    path.write_text(yaml.safe_dump({"comparisons": [{"a": "criterion=hp"}]}))
    with pytest.raises(InitpruneError, match="comparison 1 needs 'a' and 'b'"):
        load_comparisons(path)
    path.write_text(yaml.safe_dump({"comparison": []}))
    with pytest.raises(InitpruneError, match="list 'comparisons'"):
        load_comparisons(path)


def _write_runs(root, accuracies, **extra):
    """A run folder (config.yaml, result.json) per criterion and seed, at sparsity 0.9, with the given
    test accuracies per seed and ``extra`` result fields."""
    for criterion, values in accuracies.items():
        for seed, acc in enumerate(values):
            folder = root / f"{criterion}-{seed}"
            folder.mkdir(parents=True)
            config = {"model": "lenet5", "dataset": "fashion_mnist", "criterion": criterion, "sparsity": 0.9,
                      "seed": seed}  # fmt: skip
            (folder / "config.yaml").write_text(yaml.safe_dump(config))
            result = {**config, "target_sparsity": 0.9, "test_accuracy": acc,
                      "per_layer_density": {"a.weight": 0.1}, **extra}  # fmt: skip
            (folder / "result.json").write_text(json.dumps(result))


def test_report_command_compares(tmp_path, capsys):
    root = tmp_path / "runs"
    _write_runs(root, {"snip": [0.80, 0.82, 0.81], "hutch_pruner": [0.79, 0.85, 0.83]}, scoring_seconds=1.0)
    argv = ["report", str(root), "--compare", "criterion=hutch_pruner", "criterion=snip", "--where",
            "sparsity=0.9", "--correction", "bonferroni"]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((root / "comparisons.json").read_text())
    assert saved[0]["n"] == 3 and saved[0]["correction"] == "bonferroni"
    assert [p["difference"] for p in saved[0]["pairs"]] == pytest.approx([-1.0, 3.0, 2.0])
    assert saved[0]["seeds"] == [0, 1, 2]
    text = (root / "report.md").read_text()
    assert "## Paired comparisons" in text and "Bonferroni" in text and "undecided" in text
    assert main(["report", str(root), "--compare", "criterion=hutch_pruner", "criterion=grasp"]) == 2
    assert "pairs no runs" in capsys.readouterr().err


def test_lower_is_better_metrics_swap_the_verdict():
    # perplexity: A lower than B on every seed by 1.0, 1.2, 0.8 -> A is better: held
    rows = [{**_row("a", 0.9, s, 0.5), "test_perplexity": 10.0 - d} for s, d in enumerate([1.0, 1.2, 0.8])]
    rows += [{**_row("b", 0.9, s, 0.5), "test_perplexity": 10.0} for s in range(3)]
    comparison = Comparison({"criterion": "a"}, {"criterion": "b"}, metric="test_perplexity")
    (result,) = compare(rows, [comparison])
    assert result["mean"] == pytest.approx(-1.0) and result["p"] < 0.05
    assert result["verdict"] == "held"
    (reverse,) = compare(rows, [Comparison({"criterion": "b"}, {"criterion": "a"}, metric="test_perplexity")])
    assert reverse["verdict"] == "not held"
    assert lower_is_better("val_loss") and lower_is_better("test_bits_per_byte")
    assert not lower_is_better("test_accuracy") and not lower_is_better("test_top5_accuracy")
    text = "\n".join(comparisons_markdown([result]))
    assert "smaller one for test_perplexity" in text


def test_holm_runs_within_each_family():
    # three comparisons: two in family "x", one in "y"; Holm within each family, not over all three
    comparisons = [
        Comparison({"criterion": "hp"}, {"criterion": "sf"}, {"sparsity": 0.99}, family="x"),
        Comparison({"criterion": "sf"}, {"criterion": "hp"}, {"sparsity": 0.99}, family="x"),
        Comparison({"criterion": "hp"}, {"criterion": "sf"}, {"sparsity": 0.99}, family="y"),
    ]
    results = compare(ROWS, comparisons, correction="holm")
    p = results[0]["p"]
    assert 0 < p < 0.5 and results[1]["p"] == pytest.approx(p)  # the same pairs, signs swapped
    # family x: two equal p-values, Holm gives both 2p; family y alone: p unadjusted
    assert [r["p_adjusted"] for r in results] == pytest.approx([2 * p, 2 * p, p])
    assert [r["family_size"] for r in results] == [2, 2, 1]
    # with no family set, all three form one family: 3p, 3p... as adjust() over all gives
    plain = compare(ROWS, [Comparison(c.a, c.b, c.where) for c in comparisons], correction="holm")
    assert [r["p_adjusted"] for r in plain] == pytest.approx(adjust([p, p, p], "holm"))
    text = "\n".join(comparisons_markdown(results))
    assert "each family apart (x: 2 comparison(s); y: 1 comparison(s))" in text
    assert "| verdict | family |" in text and "| x |" in text and "| y |" in text


def test_report_takes_several_comparisons_files_as_families(tmp_path, capsys, monkeypatch):
    root = tmp_path / "runs"
    # no scoring_seconds: a hand-written result, which the report must still take
    _write_runs(root, {"hutch_pruner": [0.80, 0.84, 0.83], "snip": [0.81, 0.81, 0.81]})
    one = {"comparisons": [{"a": "criterion=hutch_pruner", "b": "criterion=snip", "name": "first"}] * 2}
    two = {"comparisons": [{"a": "criterion=snip", "b": "criterion=hutch_pruner", "name": "second"}]}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(one))
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(two))
    argv = ["report", str(root), "--comparisons", str(tmp_path / "one.yaml"), "--comparisons",
            str(tmp_path / "two.yaml")]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((root / "comparisons.json").read_text())
    assert [c["family"] for c in saved] == [str(tmp_path / "one.yaml")] * 2 + [str(tmp_path / "two.yaml")]
    p = saved[0]["p"]
    assert [c["p_adjusted"] for c in saved] == pytest.approx([min(1.0, 2 * p)] * 2 + [p])
    assert "| hutch_pruner | – | 0 | 0 |" in (root / "report.md").read_text()  # no scoring time recorded
    # files below the working directory are named from it, however the paths were given (a script's $PWD)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    families = [c["family"] for c in json.loads((root / "comparisons.json").read_text())]
    assert families == ["one.yaml", "one.yaml", "two.yaml"]
    # files that disagree on the correction are refused unless --correction chooses
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({**two, "correction": "bonferroni"}))
    (tmp_path / "one.yaml").write_text(yaml.safe_dump({**one, "correction": "holm"}))
    assert main(argv) == 2
    assert "disagree on correction" in capsys.readouterr().err
    assert main([*argv, "--correction", "none"]) == 0
