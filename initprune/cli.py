"""The ``initprune`` command.

    initprune run [--config FILE.yaml] [--model vgg16] [--dataset cifar10] ... [--out DIR]
    initprune criteria | models | datasets
    initprune analyze curvature --model M --dataset D [--samples N] [--out DIR]

Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml

from .errors import InitpruneError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _none_or(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else kind(text)

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
    return key.strip(), yaml.safe_load(value)


def _add_setting(parser: argparse.ArgumentParser, name: str, kind: Any, default: Any, text: str) -> None:
    flag = "--" + name.replace("_", "-")
    shown = f"{text} (default: {default})"
    args = typing.get_args(kind)
    origin = typing.get_origin(kind)
    is_optional = origin in (typing.Union, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), kind) if is_optional else kind
    if kind == (bool | str):
        parser.add_argument(flag, type=_auto_bool, default=None, metavar="{auto,true,false}", help=shown)
    elif base is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=shown)
    elif typing.get_origin(base) is dict:
        parser.add_argument(flag, nargs="*", type=_key_value, default=None, metavar="KEY=VALUE", help=shown)
    elif typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        nargs = "+" if Ellipsis in typing.get_args(base) else len(typing.get_args(base))
        parser.add_argument(flag, nargs=nargs, type=item, default=None, help=shown)
    elif base in (int, float, str):
        parse = _none_or(base) if is_optional else base
        parser.add_argument(flag, type=parse, default=None, help=shown)
    else:  # pragma: no cover - a new field type must be taught here
        raise TypeError(f"no command-line parser for setting {name!r} of type {kind!r}")


def _setting_types() -> dict[str, Any]:
    from .experiments.config import RunConfig
    from .train import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    hints.update(typing.get_type_hints(RunConfig))
    return hints


def _add_run(sub: Any) -> None:
    from .experiments.config import field_help

    run = sub.add_parser(
        "run",
        help="one complete experiment: initialize, warm up BN, score, mask, train, evaluate",
        description="Run one pruning-at-initialization experiment. Every flag is also a config-file key of "
        "the same name (dashes or underscores); flags override the file.",
    )
    run.add_argument("--config", help="YAML file of settings (keys as the flags below)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    hints = _setting_types()
    for name, (default, text) in field_help().items():
        _add_setting(run, name, hints[name], default, text)


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
    curv.add_argument("--out", default=None, help="output folder (default: docs/results/curvature/<model>)")
    curv.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    curv.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initprune",
        description="Pruning neural networks at initialization with second-order information.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    sub.add_parser("criteria", help="list the pruning criteria")
    sub.add_parser("models", help="list the models")
    sub.add_parser("datasets", help="list the datasets")
    _add_analyze(sub)
    return parser


def _print_table(entries: dict[str, str]) -> None:
    width = max(map(len, entries)) + 2
    for name, text in entries.items():
        print(f"{name:<{width}}{text}")


def _run(args: argparse.Namespace) -> int:
    from .experiments.config import build_config, field_help, load_config_file
    from .experiments.run import run_experiment

    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    mappings = {name for name, kind in _setting_types().items() if typing.get_origin(kind) is dict}
    for name in field_help():
        given = getattr(args, name)
        if given is not None:
            values[name] = dict(given) if name in mappings else given
    config = build_config(values, f"config file {args.config}" if args.config else "the command line")
    result = run_experiment(config, progress=not args.quiet)
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
    print("per-layer density: " + ", ".join(f"{k} {v:.3f}" for k, v in result["per_layer_density"].items()))
    collapsed = result["collapsed_layers"]
    print(f"layer collapse: {', '.join(collapsed) if collapsed else 'none'}")
    print(f"results in {result['out']}")


def _analyze(args: argparse.Namespace) -> int:
    from .analysis.curvature import run_curvature_analysis
    from .experiments.run import resolve_device

    out = args.out or f"docs/results/curvature/{args.model}"
    run_curvature_analysis(
        args.model,
        args.dataset,
        samples_per_class=args.samples,
        data_dir=args.data_dir,
        out_dir=out,
        seed=args.seed,
        device=str(resolve_device(args.device)),
    )
    print(f"tables and plots in {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "criteria":
            from .scores import criteria

            _print_table(criteria())
        elif args.command == "models":
            from .models import models

            _print_table(models())
        elif args.command == "datasets":
            from .data import datasets

            _print_table(datasets())
        elif args.command == "analyze":
            return _analyze(args)
        return 0
    except InitpruneError as exc:
        print(f"initprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("initprune: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
