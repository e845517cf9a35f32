"""The configuration of one pruning-at-initialization run: a typed dataclass whose fields are the
``initprune run`` flags and the config-file keys (the same names; dashes and underscores both accepted).

Precedence: dataclass defaults < config file (YAML) < command-line flags. An unknown key is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import InitpruneError, check_sparsity, unknown_choice
from ..masks import SCOPES
from ..pruning import ROUND_SCHEDULES
from ..scores import get_criterion
from ..train import TrainConfig

DEVICES = ("auto", "cpu", "cuda")
# Settings added after runs were stored, with the default that reproduces those runs: at that value they
# are left out of the identity hash, so a stored run keeps its folder name.
ADDED_KEYS: dict[str, Any] = {
    "prune_after_training": False,
    "shortcut_bn_scales": False,
    "round_schedule": "density",
    "select_best_on_test": False,
    "include_attention": True,
}
"""Settings added after run folders were first written, with their defaults: a run that holds the
default is the run an earlier ``config.yaml`` without the key describes (same identity, same folder)."""

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
    data_dir: str | None = field(default=None, metadata=_help("Where the dataset files are"))
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
        metadata={
            **_help("Under torchrun on CUDA: BatchNorm statistics of the global batch (SyncBatchNorm)"),
            "omit_default": True,
        },
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
    select_best_on_test: bool = field(
        default=False,
        metadata=_help(
            "Reproduction of the paper's reference code, not a sound protocol: evaluate the test set after "
            "every epoch and report the best epoch's test accuracy (labelled in result.json)"
        ),
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=3, schedule="cosine"),
        metadata=_help("Remaining training settings (flags of their own)"),
    )

    def __post_init__(self) -> None:
        if type(self.model_options) is _ModelDefaults:
            self.model_options = dict(DEFAULT_MODEL_OPTIONS) if self.model == DEFAULT_MODEL else {}
        self.sparsity = check_sparsity(self.sparsity)
        if self.scope not in SCOPES:
            raise unknown_choice("scope", self.scope, SCOPES)
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise unknown_choice("device", self.device, DEVICES)
        for name in ("val_size", "scoring_per_class", "batch_size"):
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
        for name in ("prune_after_training", "shortcut_bn_scales", "select_best_on_test"):
            if not isinstance(getattr(self, name), bool):
                raise InitpruneError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("model_options", "dataset_options", "criterion_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise InitpruneError(f"{name} must be a mapping of KEY: VALUE, got {getattr(self, name)!r}")
        # The criterion and its options are checked by the registry, before anything is written.
        get_criterion(self.criterion).check_options(self.criterion_options)
        # The run-level training fields are the source of truth for the TrainConfig.
        self.train = dataclasses.replace(
            self.train, epochs=self.epochs, lr=self.lr, schedule=self.schedule, seed=self.seed
        )

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of every setting (run fields and training fields), as written to config.yaml.

        A field marked ``omit_default`` appears only when it differs from its default, so that the run
        folders written before it existed still describe the same runs (and keep their identity).
        """
        flat = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "train"
            and not (f.metadata.get("omit_default") and getattr(self, f.name) == f.default)
        }
        for f in fields(TrainConfig):
            if f.name not in flat:
                flat[f.name] = getattr(self.train, f.name)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}

    def identity(self) -> str:
        """Hash of every setting that changes the result (``out`` and ``device`` excluded; settings added
        after run folders were first written are left out while they hold their default)."""
        settings = {
            k: v
            for k, v in self.to_dict().items()
            if k not in ("out", "device") and not (k in ADDED_KEYS and v == ADDED_KEYS[k])
        }
        text = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

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
    """Map dashed keys to field names; an unknown key names itself, its source and the valid keys."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in ALL_KEYS:
            raise InitpruneError(
                f"unknown key {key!r} in {source}; valid keys: {', '.join(sorted(ALL_KEYS))}"
            )
        out[name] = value
    return out


def build_config(values: Mapping[str, Any], source: str = "settings") -> RunConfig:
    """A RunConfig from a flat mapping of run and training settings."""
    values = normalize_keys(values, source)
    run_values = {k: v for k, v in values.items() if k in RUN_KEYS}
    train_values = {k: v for k, v in values.items() if k in TRAIN_KEYS}
    # Settings both levels have (epochs, lr, schedule, seed) are read from the run level.
    defaults = {f.name: f.default for f in fields(RunConfig)}
    shared = {k: run_values.get(k, defaults[k]) for k in _SHARED}
    try:
        return RunConfig(**run_values, train=TrainConfig(**shared, **train_values))
    except TypeError as exc:  # a value of the wrong kind for a field
        raise InitpruneError(f"bad setting in {source}: {exc}") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a flat dict of settings (keys checked)."""
    path = Path(path)
    if not path.is_file():
        raise InitpruneError(f"config file {str(path)!r} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InitpruneError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise InitpruneError(f"config file {str(path)!r} must hold a mapping of key: value")
    return normalize_keys(values, f"config file {path}")


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
