"""The ``initprune`` command.

    initprune run [--config FILE.yaml] [--model vgg16] [--dataset cifar10] ... [--out DIR]
    initprune sweep --grid criterion=snip,hutch_pruner sparsity=0.9,0.98 seed=0,1 [run flags] [--out DIR]
    initprune sweep --config grid.yaml [--launcher ray [--ray-address ADDR]] --out DIR
    initprune report DIR [--out DIR] [--at-sparsity S]
    initprune criteria | models | datasets
    initprune export RUN_DIR OUT
    initprune analyze curvature --model M --dataset D [--samples N] [--out DIR]

Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import InitpruneError, suggest

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


class _Parser(argparse.ArgumentParser):
    """Bad input on the command line is one line on stderr and status 2, as every other bad value is
    (argparse would print the whole usage first), with the nearest flag suggested for an unknown one."""

    def error(self, message: str) -> typing.NoReturn:
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            flags = [f[2:] for a in self._actions for f in a.option_strings if f.startswith("--")]
            given = unknown.group(1).split("=")[0].lstrip("-")
            hint = suggest(given, flags, f"`{self.prog} --help` lists them", prefix="--")
            message = f"{message}; {hint}"
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Null:
    """``none`` or ``null`` given for a setting on the command line: the setting is set to None (one warmup
    pass, no gradient clipping, ...), where an absent flag (argparse's None) leaves the config file's value
    or the default."""

    def __repr__(self) -> str:
        return "none"


_NULL = _Null()


def _none_or(kind: type, null: Any = None) -> Any:
    """A parser of ``kind`` that reads ``none``/``null`` (any case) as ``null``."""

    def parse(text: str) -> Any:
        return null if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = f"{kind.__name__} or none"
    return parse


def _auto_bool(text: str) -> bool | str:
    low = text.lower()
    if low == "auto":
        return "auto"
    if low in _TRUE | _FALSE:
        return low in _TRUE
    raise argparse.ArgumentTypeError(f"expected auto, true or false, got {text!r}")


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str) and _EXPONENT.fullmatch(parsed.strip()):
        parsed = float(parsed)  # YAML 1.1 reads 1e-3 (no dot) as a string
    return key.strip(), parsed


class _Switch(argparse.Action):
    """A boolean setting as a pair of flags, ``--X`` (true) and ``--no-X`` (false); a setting named
    ``no_X`` gets ``--no-X`` (true) and ``--X`` (false), never ``--no-no-X``."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        self.true_flag = option_strings[0]
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, option_string == self.true_flag)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _shown_default(default: Any) -> str:
    """A default as it is written in a config file: true, none, 1e-08, [80, 120]."""
    if isinstance(default, bool):
        return str(default).lower()
    if default is None or (isinstance(default, (dict, tuple, list)) and not default):
        return "none"
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, (tuple, list)):
        return "[" + ", ".join(map(_shown_default, default)) + "]"
    return str(default)


def _add_setting(parser: argparse.ArgumentParser, name: str, kind: Any, default: Any, text: str) -> None:
    flag = "--" + name.replace("_", "-")
    # a help text that says its default itself (the criterion's, the model's own) is not given a second one
    shown = text if "default" in text.lower() else f"{text} (default: {_shown_default(default)})"
    args = typing.get_args(kind)
    origin = typing.get_origin(kind)
    is_optional = origin in (typing.Union, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), kind) if is_optional else kind
    if kind == (bool | str):
        parser.add_argument(flag, type=_auto_bool, default=None, metavar="{auto,true,false}", help=shown)
    elif base is bool:
        flags = (flag, "--" + flag[5:]) if flag.startswith("--no-") else (flag, "--no-" + flag[2:])
        parser.add_argument(*flags, dest=name, action=_Switch, default=None, help=shown)
    elif typing.get_origin(base) is dict:
        parser.add_argument(flag, nargs="*", type=_key_value, default=None, metavar="KEY=VALUE", help=shown)
    elif typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        nargs = "+" if Ellipsis in typing.get_args(base) else len(typing.get_args(base))
        parser.add_argument(flag, nargs=nargs, type=item, default=None, help=shown)
    elif base in (int, float, str):
        parse = _none_or(base, _NULL) if is_optional else base
        parser.add_argument(flag, type=parse, default=None, help=shown)
    else:  # pragma: no cover - a new field type must be taught here
        raise TypeError(f"no command-line parser for setting {name!r} of type {kind!r}")


def _setting_types() -> dict[str, Any]:
    from .experiments.config import RunConfig
    from .train_config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    hints.update(typing.get_type_hints(RunConfig))
    return hints


def _add_settings(parser: argparse.ArgumentParser) -> None:
    from .experiments.config import field_help

    parser.add_argument("--config", help="YAML file of settings (keys as the flags below)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no stage lines")
    hints = _setting_types()
    for name, (default, text) in field_help().items():
        _add_setting(parser, name, hints[name], default, text)


def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="one complete experiment: initialize, warm up BN, score, mask, train, evaluate",
        description="Run one pruning-at-initialization experiment. Every flag is also a config-file key of "
        "the same name (dashes or underscores); flags override the file.",
    )
    _add_settings(run)


def _grid_item(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2`` (or ``KEY=[V1, V2]`` in YAML) → (key, [values])."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=V1,V2,..., got {text!r}")
    key, raw = text.split("=", 1)
    raw = raw.strip()
    values = yaml.safe_load(raw) if raw.startswith("[") else [yaml.safe_load(v) for v in raw.split(",")]
    if not isinstance(values, list):
        values = [values]
    return key.strip(), values


def _add_sweep(sub: Any) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="a grid of runs (criteria × sparsities × seeds × ...) and a summary table",
        description="Run every combination of the grid's values on top of the base settings (config file "
        "and flags, as for `run`). The grid: the --grid flags and every list value of the --config file "
        "(a list of lists for a list setting such as milestones); a --grid key or a flag replaces the "
        "file's value. Every point is checked before the first runs. --out is the sweep's folder: each "
        "point runs in a subfolder, finished points are skipped, failed ones are recorded, and "
        "summary.md/csv/json collect the results (mean and std over seeds). Points that differ only in "
        "sparsity, scope or training settings share one scoring, kept in <out>/score_cache; iterative "
        "criteria (rounds > 1, e.g. synflow) score toward the target sparsity and are not cached.",
    )
    sweep.add_argument(
        "--grid", nargs="+", default=[], type=_grid_item, metavar="KEY=V1,V2",
        help="swept settings, e.g. criterion=snip,hutch_pruner sparsity=0.9,0.98 seed=0,1,2",
    )  # fmt: skip
    sweep.add_argument("--shard", default=None, help="i/n: run only the points with index i mod n")
    sweep.add_argument(
        "--no-score-cache", dest="score_cache", action="store_false",
        help="score every point itself (default: share single-round scores across sparsities)",
    )  # fmt: skip
    sweep.add_argument(
        "--launcher", choices=("local", "ray"), default="local",
        help="local: points one after the other here; ray: one Ray task per point (default: local)",
    )  # fmt: skip
    sweep.add_argument(
        "--ray-address", default=None,
        help="Ray cluster to join, e.g. auto or HOST:6379 (default: a new local Ray instance)",
    )  # fmt: skip
    sweep.add_argument(
        "--gpus-per-run", type=float, default=None,
        help="GPUs per point, fractions share a GPU (default: 1 where the cluster has GPUs, else 0)",
    )  # fmt: skip
    sweep.add_argument("--cpus-per-run", type=float, default=1, help="CPUs per point (default: 1)")
    sweep.add_argument(
        "--retries", type=int, default=1, help="times a failed point is retried (ray; default: 1)"
    )
    _add_settings(sweep)


def _add_report(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="tables and plots of every run below a folder (a sweep or any folder of runs)",
        description="Read every result.json below DIR and write results.csv (one row per run, every "
        "setting and result), report.md (per model and dataset: test accuracy mean ± std over seeds by "
        "sparsity and criterion, layer collapse, scoring time) and PNG plots (accuracy vs fraction "
        "remaining, per-layer density, kept-set overlap between criteria, validation accuracy per epoch).",
    )
    report.add_argument("dir", metavar="DIR", help="folder of runs")
    report.add_argument("--out", default=None, help="where to write (default: DIR)")
    report.add_argument(
        "--at-sparsity", type=float, default=None,
        help="sparsity of the per-layer, overlap and per-epoch plots (default: the highest every "
        "criterion reached)",
    )  # fmt: skip
    report.add_argument(
        "--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
        help="paired comparison of runs matching A with runs matching B (KEY=VALUE[,KEY=VALUE...], e.g. "
        "criterion=hutch_pruner criterion=synflow), paired by seed and every other setting: per-seed "
        "differences, mean, paired 95%% t-interval, n and a verdict; repeatable",
    )  # fmt: skip
    report.add_argument(
        "--where", action="append", default=[], metavar="KEY=VALUE",
        help="filter shared by every --compare (e.g. sparsity=0.99); repeatable",
    )  # fmt: skip
    report.add_argument(
        "--comparisons", action="append", default=[], metavar="FILE",
        help="YAML/JSON file of comparisons (comparisons: [{a, b, where, name, metric}], where, metric, "
        "correction, alpha); repeatable: each file is one family, corrected apart",
    )  # fmt: skip
    report.add_argument(
        "--correction", default=None, choices=("holm", "bonferroni", "none"),
        help="correction of the verdicts for the number of comparisons (default: holm)",
    )  # fmt: skip
    report.add_argument("--alpha", type=float, default=None, help="level of the verdicts (default: 0.05)")
    report.add_argument(
        "--metric",
        default="test_accuracy",
        help="result field compared by --compare (default: test_accuracy)",
    )


def _add_analyze(sub: Any) -> None:
    analyze = sub.add_parser("analyze", help="measurements of the estimators")
    what = analyze.add_subparsers(dest="analysis", required=True)
    curv = what.add_parser(
        "curvature",
        help="error, top-k overlap and cost of each curvature estimate against the exact diagonal",
    )
    curv.add_argument("--model", required=True, help="model name (`initprune models`)")
    curv.add_argument("--dataset", required=True, help="dataset name (`initprune datasets`)")
    curv.add_argument("--samples", type=int, default=10, help="scoring samples per class (default: 10)")
    curv.add_argument("--data-dir", default=None, help="where the dataset files are")
    curv.add_argument("--out", default=None, help="output folder (default: runs/curvature/<model>-<dataset>)")
    curv.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    curv.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    curv.add_argument(
        "--model-options", nargs="*", type=_key_value, default=[], metavar="KEY=VALUE",
        help="model options, e.g. width=0.25",
    )  # fmt: skip
    curv.add_argument(
        "--warmup-batches", type=_none_or(int), default=None,
        help="BatchNorm warmup batches of 512 (default: none = one pass over the training split)",
    )  # fmt: skip
    curv.add_argument("--probes", type=int, nargs="+", default=None, help="Hutchinson probe counts k")
    curv.add_argument("--mc-samples", type=int, nargs="+", default=None, help="MC-Fisher label counts m")
    curv.add_argument(
        "--temperatures", type=float, nargs="+", default=None, help="logit temperatures (default: 1 200)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="initprune",
        description="Pruning neural networks at initialization with second-order information.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_sweep(sub)
    _add_report(sub)
    sub.add_parser("criteria", help="list the pruning criteria")
    sub.add_parser("models", help="list the models")
    sub.add_parser("datasets", help="list the datasets")
    export = sub.add_parser(
        "export",
        help="write a finished run's trained sparse network as safetensors (kept values and indices)",
        description="Write the trained sparse network of the finished run in RUN_DIR to OUT (safetensors: "
        "the kept values and their indices per pruned layer, every other tensor whole). "
        "initprune.load_export(OUT) gives back the dense state_dict bit for bit.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="folder of a finished `initprune run`")
    export.add_argument("out", metavar="OUT", help="file to write (e.g. model.safetensors)")
    _add_analyze(sub)
    return parser


def _print_table(entries: dict[str, str]) -> None:
    width = max(map(len, entries)) + 2
    for name, text in entries.items():
        print(f"{name:<{width}}{text}")


def _print_datasets() -> None:
    """Each dataset, where it is looked for (in order), and whether it is installed there."""
    from .data import REGISTRY, dataset_locations

    _print_table({name: spec.description for name, spec in REGISTRY.items()})
    print("\nwhere each is looked for, in order (* holds it; a given --data-dir is the only place read):")
    for name, spec in REGISTRY.items():
        found = dataset_locations(name)
        if found is None:
            print(
                f"  {name}: "
                + (f"its loader does not list its folders. {spec.how}" if spec.how else "no files")
            )
            continue
        there = [d for d, ok in found if ok]
        status = f"installed in {there[0]}" if there else "not installed"
        print(f"  {name}: {status}")
        for folder, ok in found:
            print(f"      {'*' if ok else ' '} {folder}")
        if not there and spec.how:
            print(f"      {spec.how}")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's settings overridden by the flags given."""
    from .experiments.config import field_help, load_config_file

    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    mappings = {name for name, kind in _setting_types().items() if typing.get_origin(kind) is dict}
    for name in field_help():
        given = getattr(args, name)
        if given is _NULL:
            values[name] = None
        elif given is not None:
            values[name] = dict(given) if name in mappings else given
    return values


def _run(args: argparse.Namespace) -> int:
    from .experiments.config import build_config
    from .experiments.run import run_experiment

    config = build_config(
        _settings(args), f"config file {args.config}" if args.config else "the command line"
    )
    result = run_experiment(config, progress=not args.quiet)
    from .distributed import is_main

    if is_main():  # under torchrun, one report
        _print_result(result)
    return 0


def _print_result(result: dict[str, Any]) -> None:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    print(
        f"{result['model']} on {result['dataset']}, {result['criterion']} "
        f"(options {json.dumps(result['criterion_options'])}), sparsity {result['sparsity']:.4f} "
        f"({result['kept_weights']} of {result['prunable_weights']} prunable weights kept)"
    )
    print(
        f"val accuracy {pct(result['val_accuracy'])}, test accuracy {pct(result['test_accuracy'])}; "
        f"warmup {result['warmup_seconds']:.1f}s, scoring {result['scoring_seconds']:.1f}s, "
        f"training {result['train_seconds']:.1f}s"
    )
    if result.get("test_perplexity") is not None:
        val = result.get("val_perplexity")
        print(
            f"per token: test perplexity {result['test_perplexity']:.3f}, "
            f"{result['test_bits_per_byte']:.4f} bits per byte; val perplexity "
            + ("n/a" if val is None else f"{val:.3f}")
        )
    print("per-layer density: " + ", ".join(f"{k} {v:.3f}" for k, v in result["per_layer_density"].items()))
    print("layer collapse: " + _collapse_summary(result))
    if result.get("prune_after_training"):
        print(f"pruned after training; dense network's test accuracy {pct(result['dense_test_accuracy'])}")
    if result.get("test_accuracy_selection") == "best_epoch_on_test":
        print(
            f"test accuracy of epoch {result['best_test_epoch']}, chosen on the test set (reference-code "
            f"protocol); final epoch {pct(result['final_test_accuracy'])}"
        )
    print(f"results in {result['out']}")


def _collapse_summary(result: dict[str, Any]) -> str:
    """Both kinds of collapse: layers left empty, and layers whose kept weights lie on no input-output
    path (disconnected)."""
    from .collapse import collapsed_or_cut

    empty = list(result.get("collapsed_layers") or [])
    cut = [name for name in collapsed_or_cut(result) if name not in empty]
    if not empty and not cut:
        return "none"
    parts = []
    if empty:
        parts.append(f"{len(empty)} empty layer(s): {', '.join(empty)}")
    if cut:
        parts.append(f"{len(cut)} disconnected layer(s) (no input-output path): {', '.join(cut)}")
    return "; ".join(parts)


def _sweep(args: argparse.Namespace) -> int:
    from .experiments.sweep import run_sweep, split_grid

    settings = _settings(args)
    out = settings.pop("out", None) or "runs/sweep"
    base, grid = split_grid(settings, f"config file {args.config}" if args.config else "the settings")
    for key, values in args.grid:  # a --grid key replaces the file's value
        base.pop(key.replace("-", "_"), None)
        grid[key.replace("-", "_")] = values
    given = [f for f in ("ray_address", "gpus_per_run") if getattr(args, f) is not None]
    if args.launcher != "ray" and given:
        flag = "--" + given[0].replace("_", "-")
        raise InitpruneError(f"{flag} is an option of --launcher ray (the launcher is {args.launcher})")
    ray_options = (
        {
            "address": args.ray_address,
            "gpus_per_run": args.gpus_per_run,
            "cpus_per_run": args.cpus_per_run,
            "retries": args.retries,
        }
        if args.launcher == "ray"
        else {}
    )
    rows = run_sweep(
        base, grid, out, shard=args.shard, progress=not args.quiet, score_cache=args.score_cache,
        launcher=args.launcher, ray_options=ray_options,
    )  # fmt: skip
    print((Path(out) / "summary.md").read_text() if rows else "no finished runs yet")
    print(f"summary in {out}/summary.md, .csv, .json")
    failed = [row for row in rows if "error" in row]
    if failed:
        print(f"initprune: {len(failed)} point(s) failed; see {out}/errors.json", file=sys.stderr)
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from .experiments.report import write_report

    def warn(line: str) -> None:
        print(f"initprune: {line}", file=sys.stderr)

    from .experiments.paired import Comparison, load_comparisons, parse_selector
    from .experiments.report import shown_path

    comparisons, chosen = [], {}
    for file in args.comparisons:  # each file one family, corrected apart, when there are several
        loaded, options = load_comparisons(file)
        for key, value in options.items():
            if chosen.setdefault(key, value) != value and getattr(args, key) is None:
                raise InitpruneError(
                    f"the comparisons files disagree on {key}: {chosen[key]!r} and {value!r} ({file}); "
                    f"give --{key} to choose one"
                )
        family = shown_path(file) if len(args.comparisons) > 1 else None
        comparisons += [dataclasses.replace(c, family=family) for c in loaded]
    where: dict = {}
    for text in args.where:
        where.update(parse_selector(text, "--where"))
    for a, b in args.compare:
        comparisons.append(Comparison(parse_selector(a, "--compare A"), parse_selector(b, "--compare B"),
                                      dict(where), metric=args.metric))  # fmt: skip
    correction = args.correction or chosen.get("correction", "holm")
    alpha = args.alpha if args.alpha is not None else chosen.get("alpha", 0.05)
    path = write_report(
        args.dir, args.out, at_sparsity=args.at_sparsity, warn=warn, comparisons=comparisons,
        correction=correction, alpha=alpha,
    )  # fmt: skip
    print(f"report in {path}, results.csv and plots beside it")
    if comparisons:
        print(f"paired comparisons in {path} and {path.parent / 'comparisons.json'}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .analysis.curvature import run_curvature_analysis
    from .experiments.run import resolve_device

    out = args.out or f"runs/curvature/{args.model}-{args.dataset}"
    options = {
        name: tuple(getattr(args, name))
        for name in ("probes", "mc_samples", "temperatures")
        if getattr(args, name) is not None
    }
    run_curvature_analysis(
        args.model,
        args.dataset,
        samples_per_class=args.samples,
        data_dir=args.data_dir,
        out_dir=out,
        seed=args.seed,
        device=str(resolve_device(args.device)),
        warmup_batches=args.warmup_batches,
        model_options=dict(args.model_options),
        progress=print if args.verbose else None,
        **options,
    )
    print(f"tables and plots in {out}")
    return 0


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, which knows its own flags
        command = parser
        for dest in ("command", "analysis"):
            subs = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
            if subs and getattr(args, dest, None):
                command = subs[0].choices[getattr(args, dest)]
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # --help, or bad input already reported in one line
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "report":
            return _report(args)
        if args.command == "criteria":
            from .scores import criteria

            _print_table(criteria())
        elif args.command == "models":
            from .models import FORMS, models

            _print_table({**models(), **FORMS})
        elif args.command == "datasets":
            _print_datasets()
        elif args.command == "analyze":
            return _analyze(args)
        elif args.command == "export":
            from .experiments.export import export_run

            info = export_run(args.run_dir, args.out)
            print(
                f"wrote {info['path']}: {info['bytes']:,} bytes at sparsity {info['sparsity']:.4f}, "
                f"{info['bytes'] / info['dense_bytes']:.2%} of the dense model's {info['dense_bytes']:,} "
                f"bytes (checkpoint.pt: {info['checkpoint_bytes']:,} bytes)"
            )
        return 0
    except InitpruneError as exc:
        print(f"initprune: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk or a read-only folder outside the atomic writers: one line too
        from .atomic import write_error

        clear = write_error(exc.filename or "a file", exc)
        if clear is None:
            raise
        print(f"initprune: error: {clear}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("initprune: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
