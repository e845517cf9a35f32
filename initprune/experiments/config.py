"""The configuration of one pruning-at-initialization run: a typed dataclass whose fields are the
``initprune run`` flags and the config-file keys (the same names; dashes and underscores both accepted).

Precedence: dataclass defaults < config file (YAML) < command-line flags. An unknown key is an error, and
so is a value of another type than its field's (``exclude_first: "false"`` is a string, not a boolean).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..curvature.losses import LOSSES
from ..data.registry import REGISTRY as DATASETS
from ..errors import InitpruneError, check_sparsity, suggest, unknown_choice
from ..masks import SCOPES
from ..pruning import ROUND_SCHEDULES
from ..scores import get_criterion
from ..train_config import TrainConfig

DEVICES = ("auto", "cpu", "cuda")
SEED_LIMIT = 2**64  # seeds are 64-bit: torch.manual_seed takes at most 2**64 - 1
# The settings of runs made before later fields existed: a later field counts in a run's hash only when it
# differs from its default, so that adding a field leaves the folders of earlier runs valid.
BASE_KEYS = (
    "model", "model_options", "dataset", "data_dir", "dataset_options", "val_size", "criterion",
    "criterion_options", "sparsity", "scope", "rounds", "warmup_batches", "warmup_cumulative",
    "scoring_per_class", "scoring_augment", "include_classifier", "exclude_first", "batch_size", "epochs",
    "lr", "schedule", "seed", "device", "out", "optimizer", "momentum", "nesterov", "weight_decay",
    "no_decay_norm_bias", "betas", "eps", "milestones", "gamma", "warmup_epochs", "label_smoothing", "amp",
    "channels_last", "grad_clip", "log_every",
)  # fmt: skip
# Settings that do not change what a run computes, so not part of its identity.
PLACE_KEYS = ("out", "device")

# The testbed: the default model at a quarter width. Any other model gets its own default options.
DEFAULT_MODEL = "vgg11"
DEFAULT_MODEL_OPTIONS: dict[str, Any] = {"width": 0.25}


class _ModelDefaults(dict):
    """``model_options`` not given: resolved in ``RunConfig.__post_init__`` to the model's own defaults
    (``DEFAULT_MODEL_OPTIONS`` for ``DEFAULT_MODEL``)."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class RunConfig:
    """One run: initialize, (warm up BatchNorm), score, mask, train the sparse network, evaluate.

    The defaults are the small-scale testbed: VGG-11 at a quarter width on Fashion-MNIST, pruned to 98%
    sparsity by HP (Hutchinson OBD) after a BatchNorm warmup, trained for 3 epochs.
    """

    model: str = field(default=DEFAULT_MODEL, metadata=_help("Model name (`initprune models` lists them)"))
    model_options: dict[str, Any] = field(
        default_factory=_ModelDefaults,
        metadata=_help(
            "Model options as KEY=VALUE (e.g. width=0.5; see `initprune models`); not given: the model's "
            f"own defaults, and width={DEFAULT_MODEL_OPTIONS['width']} for the default {DEFAULT_MODEL}"
        ),
    )
    dataset: str = field(default="fashion_mnist", metadata=_help("Dataset name (`initprune datasets`)"))
    data_dir: str | None = field(
        default=None,
        metadata=_help(
            "The folder of the dataset's files, the only place read when given (default: $INITPRUNE_DATA, "
            "the system's folder such as /usr/share/datasets/fashion-mnist, then ~/.cache/initprune/<name>; "
            "`initprune datasets` shows each dataset's folders and whether it is there)"
        ),
    )
    dataset_options: dict[str, Any] = field(
        default_factory=dict, metadata=_help("Dataset options as KEY=VALUE (e.g. augmentation=crop_flip)")
    )
    val_size: int = field(default=5000, metadata=_help("Validation samples held out of the training set"))
    criterion: str = field(default="hutch_pruner", metadata=_help("Pruning criterion (`initprune criteria`)"))
    criterion_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("Criterion options as KEY=VALUE (e.g. probes=10 temperature=200)"),
    )
    sparsity: float = field(default=0.98, metadata=_help("Fraction of prunable weights removed, in [0, 1)"))
    scope: str = field(default="global", metadata=_help("Pruning scope: global, layerwise or erk"))
    rounds: int | None = field(
        default=None, metadata=_help("Pruning rounds (default: the criterion's; synflow 100, others 1)")
    )
    warmup_batches: int | None = field(
        default=20,
        metadata=_help(
            "BatchNorm warmup batches before scoring (0: none; none: one pass over training data)"
        ),
    )
    warmup_cumulative: bool = field(
        default=False, metadata=_help("Cumulative averaging of BatchNorm statistics during the warmup")
    )
    scoring_per_class: int = field(default=10, metadata=_help("Scoring samples drawn per class"))
    scoring_augment: bool = field(default=False, metadata=_help("Augment the scoring samples"))
    include_classifier: bool = field(default=False, metadata=_help("Also prune the final classifier"))
    exclude_first: bool = field(default=False, metadata=_help("Keep the first layer dense"))
    include_attention: bool = field(
        default=True, metadata=_help("Prune nn.MultiheadAttention projections (false: keep them dense)")
    )
    batch_size: int = field(default=512, metadata=_help("Training batch size"))
    epochs: float = field(default=3, metadata=_help("Training epochs; fractions allowed (0.1 = a tenth)"))
    lr: float = field(default=0.03, metadata=_help("Base learning rate"))
    schedule: str = field(default="cosine", metadata=_help("Learning-rate schedule: step, cosine, constant"))
    seed: int = field(default=0, metadata=_help("Seed of initialization, scoring, splits and training"))
    device: str = field(default="auto", metadata=_help("Device: auto (cuda if available), cpu or cuda"))
    out: str | None = field(
        default=None, metadata=_help("Output folder (default: runs/<model>-<dataset>-<criterion>-...-<hash>)")
    )
    sync_batchnorm: bool = field(
        default=False,
        metadata=_help("Under torchrun on CUDA: BatchNorm statistics of the global batch (SyncBatchNorm)"),
    )
    prune_after_training: bool = field(
        default=False,
        metadata=_help(
            "Prune after training (PaT), the reference PaI is measured against: train dense for `epochs`, "
            "prune the trained network by `criterion` (magnitude for the classic PaT) at `sparsity`, then "
            "retrain the pruned trained weights with the mask for `epochs` more (no rewinding, no warmup)"
        ),
    )
    shortcut_bn_scales: bool = field(
        default=False,
        metadata=_help(
            "Reproduction of the paper's reference code, not the default: also prune the BatchNorm scales "
            "of ResNet shortcut projections (its name rule puts them in the global top-k)"
        ),
    )
    round_schedule: str = field(
        default="density",
        metadata=_help(
            "Iterative schedule d^((t+1)/R): density (default) or sparsity, the paper's reference code's "
            "reading and mask rule (round 0 prunes to s^(1/R), 0.999 for synflow at 0.9: a collapsed network)"
        ),
    )
    round_warmup: bool = field(
        default=False,
        metadata=_help(
            "Iterative schedules: run the BatchNorm warmup (warmup_batches, same data) again before every "
            "round after the first, so each round scores with the statistics of the network pruned so far "
            "(false: every round uses the first warmup's)"
        ),
    )
    select_best_on_test: bool = field(
        default=False,
        metadata=_help(
            "Reproduction of the paper's reference code, not a sound protocol: evaluate the test set after "
            "every epoch and report the best epoch's test accuracy (labelled in result.json)"
        ),
    )
    train_seed: int | None = field(
        default=None,
        metadata=_help(
            "Seed of the training's data order and augmentation (none: seed); the initialization, "
            "splits, scoring samples and mask stay those of seed, so one mask trains with several orders"
        ),
    )
    probe_seed: int | None = field(
        default=None,
        metadata=_help(
            "Seed of the criterion's own random draws: Hutchinson probes, sampled Fisher labels, random "
            "scores (none: seed); the initialization and scoring samples stay those of seed"
        ),
    )
    layer_densities: str | None = field(
        default=None,
        metadata=_help(
            "FILE|RUN_DIR: each layer's density from a YAML/JSON file (layer: density) or another run's "
            "result.json (per_layer_density); the criterion ranks the weights within each layer (one-shot)"
        ),
    )
    scoring_redraw: bool = field(
        default=False,
        metadata=_help(
            "Reproduction of the paper's reference code, not the default: the scoring samples carry the "
            "training augmentation, redrawn on every pass over them by an unseeded generator (the mask "
            "cannot be reproduced; never cached)"
        ),
    )
    warmup_augment: bool = field(
        default=False,
        metadata=_help(
            "Reproduction of the paper's reference code, not the default: the BatchNorm warmup's batches "
            "carry the training augmentation"
        ),
    )
    warmup_shuffle: bool = field(
        default=True,
        metadata=_help(
            "Shuffle the BatchNorm warmup's training data (false, the reference code's: in file order)"
        ),
    )
    train_shuffle: bool = field(
        default=True,
        metadata=_help(
            "Shuffle the training data every epoch (false, the reference code's CIFAR loader: file order)"
        ),
    )
    loss: str | None = field(
        default=None,
        metadata=_help(
            "Loss of scoring and training: cross_entropy (class targets) or token_cross_entropy (per-token "
            "targets; a sequence's loss is the mean over its tokens, and validation and test report "
            "per-token loss, perplexity and bits per byte); default: the dataset's (token_cross_entropy "
            "for fortunes_lm, else cross_entropy)"
        ),
    )
    scoring_sequences: int = field(
        default=64,
        metadata=_help(
            "Scoring samples of a dataset with per-token targets (fortunes_lm), which has no class to draw "
            "scoring_per_class from: that many training sequences, drawn by the seed"
        ),
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=3, schedule="cosine"),
        metadata=_help("Remaining training settings (flags of their own)"),
    )

    def __post_init__(self) -> None:
        if type(self.model_options) is _ModelDefaults:
            self.model_options = dict(DEFAULT_MODEL_OPTIONS) if self.model == DEFAULT_MODEL else {}
        for name in ("data_dir", "out"):  # paths may be given as Path objects
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        check_types(
            {f.name: getattr(self, f.name) for f in fields(self) if f.name != "train"}, "the run settings"
        )
        if not 0 <= self.seed < SEED_LIMIT:
            raise InitpruneError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")
        self.sparsity = check_sparsity(self.sparsity)
        if self.scope not in SCOPES:
            raise unknown_choice("scope", self.scope, SCOPES)
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise unknown_choice("device", self.device, DEVICES)
        for name in ("val_size", "scoring_per_class", "batch_size", "scoring_sequences"):
            value = getattr(self, name)
            low = 0 if name == "val_size" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InitpruneError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.rounds is not None and (not isinstance(self.rounds, int) or self.rounds < 1):
            raise InitpruneError(f"rounds must be a positive integer or none, got {self.rounds!r}")
        if self.warmup_batches is not None and (
            not isinstance(self.warmup_batches, int) or self.warmup_batches < 0
        ):
            raise InitpruneError(
                f"warmup_batches must be an integer >= 0 or none, got {self.warmup_batches!r}"
            )
        if not isinstance(self.sync_batchnorm, bool):
            raise InitpruneError(f"sync_batchnorm must be true or false, got {self.sync_batchnorm!r}")
        if self.round_schedule not in ROUND_SCHEDULES:
            raise unknown_choice("round_schedule", self.round_schedule, ROUND_SCHEDULES)
        for name in (
            "prune_after_training", "shortcut_bn_scales", "select_best_on_test", "warmup_augment",
            "warmup_shuffle", "train_shuffle", "scoring_redraw", "round_warmup",
        ):  # fmt: skip
            if not isinstance(getattr(self, name), bool):
                raise InitpruneError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.round_warmup and (self.warmup_batches == 0 or self.prune_after_training):
            why = "prune_after_training scores without one" if self.prune_after_training else "it is 0"
            raise InitpruneError(
                f"round_warmup runs the BatchNorm warmup (warmup_batches) again before every round, but "
                f"{why}: set warmup_batches to a count >= 1 or none (one pass), or round_warmup to false"
            )
        for name in ("train_seed", "probe_seed"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < SEED_LIMIT:
                raise InitpruneError(f"{name} must be an integer in [0, 2**64) or none, got {value!r}")
        if self.layer_densities is not None:
            if isinstance(self.layer_densities, os.PathLike):
                self.layer_densities = os.fspath(self.layer_densities)
            if self.rounds not in (None, 1) or self.round_schedule != "density":
                raise InitpruneError(
                    "layer_densities make a one-shot mask: rounds must be 1 or none and round_schedule "
                    f"density, got rounds={self.rounds!r}, round_schedule={self.round_schedule!r}"
                )
        for name in ("model_options", "dataset_options", "criterion_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise InitpruneError(f"{name} must be a mapping of KEY: VALUE, got {getattr(self, name)!r}")
        if self.loss is None:
            spec = DATASETS.get(self.dataset)
            self.loss = spec.loss if spec is not None else "cross_entropy"
        if self.loss not in LOSSES:
            raise unknown_choice("loss", self.loss, LOSSES)
        # The criterion and its options are checked by the registry, before anything is written.
        get_criterion(self.criterion).check_options(self.criterion_options)
        # The run-level training fields are the source of truth for the TrainConfig.
        self.train = dataclasses.replace(
            self.train,
            epochs=self.epochs,
            lr=self.lr,
            schedule=self.schedule,
            seed=self.training_seed,
            loss=self.loss,
        )

    @property
    def training_seed(self) -> int:
        """The seed of the training's data order and augmentation: ``train_seed``, else ``seed``."""
        return self.seed if self.train_seed is None else self.train_seed

    @property
    def scoring_seed(self) -> int:
        """The seed of the criterion's own random draws: ``probe_seed``, else ``seed``."""
        return self.seed if self.probe_seed is None else self.probe_seed

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of every setting (run fields and training fields), as written to config.yaml.

        Every field appears; a field added after :data:`BASE_KEYS` counts in the run's hash only when it
        differs from its default (:func:`settings_hash`), so run folders written before it existed keep
        their identity.
        """
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "train"}
        for f in fields(TrainConfig):
            if f.name not in flat:
                flat[f.name] = getattr(self.train, f.name)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}

    def identity(self) -> str:
        """Hash of every setting that changes the result (``out`` and ``device`` excluded), for naming the
        default output folder."""
        settings = _hashed(self.to_dict(), canonical=False)
        text = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def settings_hash(self) -> str:
        """The run's settings hash: what every file of its folder carries (see :func:`settings_hash`)."""
        return settings_hash(self.to_dict())

    def default_out(self) -> str:
        return (
            f"runs/{self.model}-{self.dataset}-{self.criterion}-s{self.sparsity:g}-seed{self.seed}-"
            f"{self.identity()}"
        )


RUN_KEYS = tuple(f.name for f in fields(RunConfig) if f.name != "train")
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name not in RUN_KEYS)
_SHARED = tuple(f.name for f in fields(TrainConfig) if f.name in RUN_KEYS)
ALL_KEYS = RUN_KEYS + TRAIN_KEYS


def normalize_keys(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Map dashed keys to field names; an unknown key names itself, its source and the nearest valid key."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in ALL_KEYS:
            hint = suggest(name, ALL_KEYS, "`initprune run --help` lists every key")
            raise InitpruneError(f"unknown key {key!r} in {source}; {hint}")
        out[name] = value
    return out


@functools.cache
def _hints() -> dict[str, Any]:
    """The declared type of every setting."""
    hints = typing.get_type_hints(TrainConfig)
    hints.update(typing.get_type_hints(RunConfig))
    return hints


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _expected(value: Any, hint: Any) -> str | None:
    """None when ``value`` has the type ``hint`` declares, else a description of what it must be.

    Strict on purpose: a YAML string such as ``"false"`` is not a boolean, and ``1.5`` is not an integer.
    Types this does not know are not checked here (their field checks its own value)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kinds = [a for a in args if a is not type(None)]
        if set(kinds) == {bool, str}:  # true, false or 'auto'
            ok = isinstance(value, bool) or value == "auto"
            return None if ok else "true, false or auto (a YAML boolean, unquoted, or the word auto)"
        wanted = [_expected(value, k) for k in kinds]
        if any(w is None for w in wanted):
            return None
        return " or ".join(w for w in wanted if w) + (" or null" if type(None) in args else "")
    if hint is bool:
        return None if isinstance(value, bool) else "true or false (a YAML boolean, unquoted)"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        return None if _is_number(value) else "a number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    origin = typing.get_origin(hint)
    if origin is dict:
        ok = isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
        return None if ok else "a mapping of KEY: VALUE"
    if origin is tuple:
        items = typing.get_args(hint)
        if Ellipsis in items:  # a list of numbers, or a single one
            ok = _is_number(value) or (isinstance(value, (list, tuple)) and all(_is_number(v) for v in value))
            return None if ok else "a list of numbers"
        ok = isinstance(value, (list, tuple)) and len(value) == len(items) and all(map(_is_number, value))
        return None if ok else f"a list of {len(items)} numbers"
    return None


def check_types(values: Mapping[str, Any], source: str) -> None:
    """Raise naming the key, its value and the type it needs if a value is not of its field's type."""
    hints = _hints()
    for key, value in values.items():
        if key in hints and (wanted := _expected(value, hints[key])) is not None:
            raise InitpruneError(f"{key} must be {wanted}, got {value!r} (in {source})")


def build_config(values: Mapping[str, Any], source: str = "settings") -> RunConfig:
    """A RunConfig from a flat mapping of run and training settings."""
    values = normalize_keys(values, source)
    check_types(values, source)
    run_values = {k: v for k, v in values.items() if k in RUN_KEYS}
    train_values = {k: v for k, v in values.items() if k in TRAIN_KEYS}
    # Settings both levels have (epochs, lr, schedule, seed) are read from the run level.
    defaults = {f.name: f.default for f in fields(RunConfig)}
    shared = {k: run_values.get(k, defaults[k]) for k in _SHARED}
    shared = {k: v for k, v in shared.items() if v is not None}  # None: resolved by the run (loss)
    try:
        return RunConfig(**run_values, train=TrainConfig(**shared, **train_values))
    except TypeError as exc:  # a value of the wrong kind for a field
        raise InitpruneError(f"bad setting in {source}: {exc}") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line and column, 1-based)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a flat dict of settings (keys checked)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise InitpruneError(f"config file {str(path)!r} {what}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InitpruneError(f"config file {str(path)!r} is not valid YAML: {yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InitpruneError(f"cannot read config file {str(path)!r}: {exc}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise InitpruneError(
            f"config file {str(path)!r} must hold a mapping of key: value, not a {type(values).__name__}"
        )
    return normalize_keys(values, f"config file {path}")


@functools.cache
def default_settings() -> dict[str, Any]:
    """Every setting at its default (what a config.yaml that lacks a key means by it)."""
    return build_config({}).to_dict()


def _canonical(key: str, value: Any) -> Any:
    """One spelling per value: numbers of float fields as floats (``epochs: 1`` is ``epochs: 1.0``)."""
    hint = _hints().get(key)
    floats = hint is float or (typing.get_origin(hint) is not None and float in typing.get_args(hint))
    if floats and _is_number(value) and bool not in typing.get_args(hint):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _hashed(settings: Mapping[str, Any], canonical: bool = True) -> dict[str, Any]:
    """The settings that make a run's identity: all but ``out`` and ``device``; a key added after
    :data:`BASE_KEYS` only when it differs from its default."""
    defaults = default_settings()
    out = {}
    for key, value in settings.items():
        if key in PLACE_KEYS:
            continue
        if key not in BASE_KEYS and key in defaults and _same(value, defaults[key], key):
            continue
        out[key] = _canonical(key, value) if canonical else value
    return out


def _same(a: Any, b: Any, key: str) -> bool:
    text = functools.partial(json.dumps, sort_keys=True, default=str)
    return text(_canonical(key, a)) == text(_canonical(key, b))


def settings_hash(settings: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of the settings that decide what a run computes (``out`` and ``device``
    excluded, numbers of float fields as floats, later fields at their defaults left out)."""
    text = json.dumps(_hashed(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differing_settings(recorded: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two runs' settings; a key one of them lacks means its
    default (``out`` and ``device`` are not compared)."""
    defaults = default_settings()
    keys = (set(recorded) | set(ours)) - set(PLACE_KEYS)
    return sorted(
        k for k in keys if not _same(recorded.get(k, defaults.get(k)), ours.get(k, defaults.get(k)), k)
    )


def field_help() -> dict[str, tuple[Any, str]]:
    """{key: (default, help)} for every setting, run fields first."""
    out: dict[str, tuple[Any, str]] = {}
    defaults = RunConfig()
    for f in fields(RunConfig):
        if f.name == "model_options":  # depends on the model: the help text says how
            out[f.name] = ("the model's own", f.metadata.get("help", ""))
        elif f.name != "train":
            out[f.name] = (getattr(defaults, f.name), f.metadata.get("help", ""))
    for f in fields(TrainConfig):
        if f.name not in out:
            out[f.name] = (getattr(defaults.train, f.name), f.metadata.get("help", ""))
    return out
