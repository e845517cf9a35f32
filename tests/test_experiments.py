"""Complete runs: outputs, resume after an interruption, refusal to mix runs, and the command line."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from initprune.cli import main
from initprune.experiments import build_config, run_experiment
from initprune.experiments import run as run_module

FASHION = Path("/usr/share/datasets/fashion-mnist")
TIMING = {"warmup_seconds", "scoring_seconds", "train_seconds", "out"}

SMALL = {
    "model": "resnet20",
    "model_options": {"width": 0.25},
    "dataset": "synthetic",
    "dataset_options": {"input_shape": [1, 8, 8], "train_size": 400, "test_size": 100, "num_classes": 4},
    "val_size": 80,
    "criterion": "fisher_pruner",
    "sparsity": 0.9,
    "warmup_batches": 2,
    "scoring_per_class": 3,
    "batch_size": 64,
    "epochs": 2,
    "device": "cpu",
}


def _config(out: Path, **changes):
    return build_config({**SMALL, "out": str(out), **changes})


def test_a_run_writes_every_output(tmp_path):
    result = run_experiment(_config(tmp_path / "run"), progress=False)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == [
        "checkpoint.pt",
        "config.yaml",
        "mask.pt",
        "metrics.jsonl",
        "pruned_init.pt",
        "pruning.json",
        "result.json",
        "run.json",
    ]
    for key in (
        "model",
        "dataset",
        "criterion",
        "sparsity",
        "val_accuracy",
        "test_accuracy",
        "per_layer_density",
        "collapsed_layers",
        "scoring_seconds",
        "train_seconds",
        "seed",
    ):
        assert key in result
    assert result["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert result["pruned_weights_stayed_zero"] is True
    assert result["temperature"] == 1.0 and result["criterion_options"]["chunk_size"] is None
    assert set(result["per_layer_density"]) == set(torch.load(tmp_path / "run" / "mask.pt")["masks"])
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert json.loads((tmp_path / "run" / "result.json").read_text()) == result
    # a finished run is returned, not run again
    assert run_experiment(_config(tmp_path / "run"), progress=False) == result


def _comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING}


def interrupt_after_first_epoch(monkeypatch, config) -> None:
    """Run ``config`` until a KeyboardInterrupt after its first epoch; then forbid scoring, which a resumed
    run must not repeat."""
    real_train = run_module.train

    def killed_after_first_epoch(*args, on_epoch_end, **kwargs):
        def hook(record):
            on_epoch_end(record)
            if record["epoch"] == 1:
                raise KeyboardInterrupt

        return real_train(*args, on_epoch_end=hook, **kwargs)

    monkeypatch.setattr(run_module, "train", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=False)
    monkeypatch.setattr(run_module, "train", real_train)
    monkeypatch.setattr(run_module, "prune", lambda *a, **k: pytest.fail("scoring must not run again"))


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    reference = run_experiment(_config(tmp_path / "whole"), progress=False)

    interrupt_after_first_epoch(monkeypatch, _config(tmp_path / "cut"))
    assert not (tmp_path / "cut" / "result.json").exists()
    resumed = run_experiment(_config(tmp_path / "cut"), progress=False)
    assert _comparable(resumed) == _comparable(reference)
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(whole[k], cut[k]) for k in whole)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _stages(text: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in text.splitlines() if line.startswith("[")]


def test_stage_lines_show_on_a_terminal_with_the_bars_and_say_what_is_skipped(tmp_path, monkeypatch):
    config = _config(tmp_path / "run")
    streams = {}

    def run() -> list[str]:
        streams.update(out=_Terminal(), err=_Terminal())
        monkeypatch.setattr(sys, "stdout", streams["out"])
        monkeypatch.setattr(sys, "stderr", streams["err"])
        run_experiment(config, progress=True)
        return _stages(streams["out"].getvalue())

    stages = run()
    assert [s.split(":")[0] for s in stages] == [
        "data", "warmup", "scoring", "scored", "epoch 1", "epoch 2", "evaluating", "result"
    ]  # fmt: skip
    assert stages[2] == "scoring: fisher_pruner on 12 samples"
    assert "val accuracy 0." in stages[4] and "val accuracy 0." in stages[5]  # one line per finished epoch
    assert "epoch 2/2" in streams["err"].getvalue()  # and the bars, on the terminal's stderr
    # interrupted after its last epoch: the mask and the checkpoint are reused, and each says so
    (tmp_path / "run" / "result.json").unlink()
    stages = run()
    assert "scoring skipped: the mask from mask.pt, sparsity 0.9" in stages[1]
    assert stages[2] == "resuming from epoch 2 of 2" and stages[3].startswith("evaluating")
    assert run()[0].startswith("already finished: test accuracy 0.")


def test_a_cached_scoring_says_so(tmp_path, capsys):
    for sparsity in (0.8, 0.9):
        run_experiment(_config(tmp_path / f"s{sparsity}", sparsity=sparsity), score_cache=tmp_path / "cache")
    first, second = [s for s in _stages(capsys.readouterr().out) if s.startswith("scored")]
    assert "cache" not in first and "scores from the cache (computed in" in second


def test_an_output_folder_of_another_run_is_refused(tmp_path):
    run_experiment(_config(tmp_path / "run", epochs=0.5), progress=False)
    with pytest.raises(ValueError, match=r"other settings \(differing: epochs\)"):
        run_experiment(_config(tmp_path / "run", epochs=1), progress=False)


def test_default_output_folder_is_named_by_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = build_config(SMALL), build_config({**SMALL, "sparsity": 0.95})
    assert a.default_out() != b.default_out()
    assert a.default_out().startswith("runs/resnet20-synthetic-fisher_pruner-s0.9-seed0-")
    assert build_config({**SMALL, "device": "cuda"}).identity() == a.identity()


def test_cli_run_with_a_config_file_and_flags(tmp_path, capsys):
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "epochs": 0.5, "criterion": "snip"}))
    code = main(
        [
            "run",
            "--config",
            str(config),
            "--sparsity",
            "0.8",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--criterion-options",
            "temperature=2",
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["criterion"] == "snip" and result["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert result["temperature"] == 2
    printed = capsys.readouterr().out
    assert "per-layer density" in printed and "test accuracy" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--criterion", "hutch_prunr"], "unknown criterion 'hutch_prunr'; did you mean 'hutch_pruner'?"),
        (["--sparsity", "1.5"], "sparsity must be in [0, 1)"),
        (["--sparsity", "0.9.5"], "initprune run: error: argument --sparsity: invalid float value: '0.9.5'"),
        (["--sparsty", "0.9"], "unrecognized arguments: --sparsty 0.9; did you mean '--sparsity'?"),
        (["--amp", "maybe"], "argument --amp: expected auto, true or false, got 'maybe'"),
        (["--model", "resnet2"], "unknown model 'resnet2'; did you mean 'resnet20'?"),
        (["--model", "zzz"], "unknown model 'zzz'; `initprune models` lists them"),
        (["--scope", "rows"], "unknown scope 'rows'; valid: erk, global, layerwise"),
        (
            ["--dataset", "cifar10", "--data-dir", "/nonexistent", "--dataset-options"],
            "cifar-10-python.tar.gz",
        ),
        (["--criterion-options", "probes=3"], "'fisher_pruner' does not take option(s) 'probes'"),
        (
            ["--criterion-options", "temperatur=3"],
            "did you mean 'temperature'? valid: chunk_size, temperature",
        ),
        (["--dataset-options", "train_sise=3"], "did you mean 'train_size'?"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    args = ["run", "--quiet", "--out", str(tmp_path / "x")]
    for key, value in SMALL.items():
        if not isinstance(value, dict):
            args += [f"--{key.replace('_', '-')}", str(value)]
    args += ["--dataset-options", "input_shape=[1,8,8]", "train_size=400", "test_size=100", "num_classes=4"]
    code = main(args + argv)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_cli_unknown_config_key(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("sparsty: 0.9\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    expected = f"unknown key 'sparsty' in config file {config}; did you mean 'sparsity'? (`initprune run"
    assert err.startswith(f"initprune: error: {expected}") and err.count("\n") == 1  # not every key
    config.write_text("zzz: 1\n")
    assert main(["run", "--config", str(config)]) == 2
    assert capsys.readouterr().err.endswith("; `initprune run --help` lists every key\n")


def test_suggestions_name_the_nearest_valid_name_and_list_only_short_lists():
    from initprune.errors import suggest

    assert suggest("hutch_prunr", ["hutch_pruner", "hutch_diag"]) == (
        "did you mean 'hutch_pruner'? valid: hutch_diag, hutch_pruner"
    )
    many = [f"key{i:02d}" for i in range(40)]
    assert suggest("key7", many, "`x` lists them") == "did you mean 'key07'? (`x` lists them)"
    assert suggest("other", many, "`x` lists them") == "`x` lists them"
    assert suggest("other", many).startswith("valid: key00, key01")  # nowhere else to look: the list


def _run_help() -> str:
    from initprune.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["run"].format_help()


def test_run_help_gives_each_default_once_and_no_double_negatives():
    text = _run_help()
    assert "--no-no-" not in text and "--no-decay-norm-bias | --decay-norm-bias" in text
    flat = " ".join(text.split())
    assert "(default: the criterion's; synflow 100, others 1)" in flat
    assert not re.search(r"\(default: [^)]*\) \(default:", flat)  # never two defaults
    assert "--sparsity SPARSITY Fraction of prunable weights removed, in [0, 1) (default: 0.98)" in flat
    assert "(default: false)" in flat and "(default: None)" not in flat and "(default: 1e-08)" in flat
    assert (
        "$INITPRUNE_DATA" in flat and "/usr/share/datasets/fashion-mnist" in flat
    )  # where data is looked for


def test_boolean_flag_pairs_set_the_setting(tmp_path):
    from initprune.cli import _settings, build_parser

    parser = build_parser()
    for argv, expected in (([], None), (["--no-decay-norm-bias"], True), (["--decay-norm-bias"], False)):
        args = parser.parse_args(["run", *argv])
        assert args.no_decay_norm_bias is expected
    assert _settings(parser.parse_args(["run", "--no-exclude-first"]))["exclude_first"] is False
    assert _settings(parser.parse_args(["run", "--exclude-first"]))["exclude_first"] is True


def test_none_on_the_command_line_sets_an_optional_setting_to_none(tmp_path):
    """``--warmup-batches none`` means one warmup pass (None), not "flag absent": it overrides the default
    (20) and a config file's value, in any case; an absent flag leaves them."""
    from initprune.cli import _settings, build_parser
    from initprune.experiments.config import build_config, default_settings

    parser = build_parser()
    assert default_settings()["warmup_batches"] == 20
    config = tmp_path / "c.yaml"
    config.write_text("warmup_batches: 5\ngrad_clip: 1.0\n")
    for text in ("none", "null", "None"):
        settings = _settings(parser.parse_args(["run", "--warmup-batches", text]))
        assert "warmup_batches" in settings and settings["warmup_batches"] is None
        assert build_config(settings, "test").warmup_batches is None
    given = _settings(
        parser.parse_args(["run", "--config", str(config), "--warmup-batches", "none", "--grad-clip", "null"])
    )
    assert given["warmup_batches"] is None and given["grad_clip"] is None
    absent = _settings(parser.parse_args(["run", "--config", str(config)]))
    assert absent["warmup_batches"] == 5 and absent["grad_clip"] == 1.0
    assert "warmup_batches" not in _settings(parser.parse_args(["run"]))
    assert _settings(parser.parse_args(["run", "--warmup-batches", "7"]))["warmup_batches"] == 7


def test_cli_listings(capsys):
    for command, expected in (
        ("criteria", "hutch_pruner"),
        ("models", "resnet20"),
        ("datasets", "fashion_mnist"),
    ):
        assert main([command]) == 0
        assert expected in capsys.readouterr().out


def test_datasets_says_where_each_is_looked_for_and_whether_it_is_there(tmp_path, capsys, monkeypatch):
    from initprune.data import dataset_locations
    from initprune.errors import InitpruneError

    monkeypatch.setenv("INITPRUNE_DATA", str(tmp_path))
    batches = tmp_path / "cifar10" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).touch()
    found = dataset_locations("cifar10")
    assert found[:4] == [(tmp_path, False), (tmp_path / "cifar-10-batches-py", False),
                         (tmp_path / "cifar10", False), (batches, True)]  # fmt: skip
    assert dataset_locations("synthetic") is None
    with pytest.raises(InitpruneError, match="did you mean 'cifar10'"):
        dataset_locations("cifar1O")
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert f"  cifar10: installed in {batches}\n" in out and f"      * {batches}\n" in out
    assert "  cifar100: not installed\n" in out and f"        {tmp_path / 'cifar100'}\n" in out
    assert "cifar-100-python.tar.gz" in out  # how to get a missing one
    assert "  synthetic: no files\n" in out


def test_the_installed_command_runs():
    done = subprocess.run(
        [sys.executable, "-m", "initprune.cli", "criteria"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "fisher_diag" in done.stdout


@pytest.mark.skipif(not FASHION.exists() and not os.environ.get("CI"), reason="dataset-fashion-mnist absent")
def test_real_fashion_mnist_run_learns(tmp_path):
    """A short real run: LeNet-5 on Fashion-MNIST, 80% sparse by SNIP, half an epoch."""
    config = build_config(
        {
            "model": "lenet5",
            "model_options": {},
            "criterion": "snip",
            "sparsity": 0.8,
            "epochs": 0.5,
            "batch_size": 128,
            "warmup_batches": 0,
            "lr": 0.1,
            "device": "cpu",
            "out": str(tmp_path / "f"),
        }
    )
    result = run_experiment(config, progress=False)
    assert result["test_accuracy"] > 0.5
    assert result["collapsed_layers"] == []
    assert result["pruned_weights_stayed_zero"]


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("configs/*/*.yaml")), ids=str)
def test_every_preset_is_a_valid_config(path):
    from initprune.experiments import load_config_file
    from initprune.models import create_model

    config = build_config(load_config_file(path), str(path))
    assert config.model and config.dataset
    if "paper" in str(path):
        assert config.train.epochs == 160 and config.batch_size == 512
    create_model(config.model, num_classes=10, in_channels=3, **config.model_options)


def test_a_finished_folder_from_before_include_attention_is_still_finished(tmp_path):
    import shutil

    from initprune import InitpruneError
    from initprune.experiments import load_config_file

    root = Path(__file__).resolve().parent.parent / "docs/results/fashion_mnist/criteria_warmup"
    source = root / "criterion=snip,warmup_batches=0"
    folder = tmp_path / "old"
    shutil.copytree(source, folder)
    assert "include_attention" not in (folder / "config.yaml").read_text()
    config = build_config({**load_config_file(folder / "config.yaml"), "out": str(folder)})
    assert run_experiment(config, progress=False) == json.loads((source / "result.json").read_text())
    changed = build_config({**load_config_file(folder / "config.yaml"), "out": str(folder)})
    changed.include_attention = False
    with pytest.raises(InitpruneError, match="differing: include_attention"):
        run_experiment(changed, progress=False)
