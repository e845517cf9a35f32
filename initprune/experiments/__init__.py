"""Experiments: typed run configurations and complete, resumable runs."""

from .config import RunConfig, build_config, load_config_file
from .run import run_experiment, validate_config

__all__ = ["RunConfig", "build_config", "load_config_file", "run_experiment", "validate_config"]
