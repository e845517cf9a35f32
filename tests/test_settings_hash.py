"""The settings hash of a run is stable: every committed run folder keeps the hash it was written with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from initprune.experiments.config import build_config, settings_hash

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
RECORDED = sorted(RESULTS.rglob("run.json"))


def test_committed_run_folders_are_found():
    assert len(RECORDED) >= 100  # the study's folders: a moved docs/results must not make this test vacuous


@pytest.mark.parametrize("settings_file", RECORDED, ids=lambda p: str(p.parent.relative_to(RESULTS)))
def test_the_hash_of_a_committed_run_does_not_change(settings_file: Path):
    record = json.loads(settings_file.read_text())
    recorded = record["settings_hash"]
    assert settings_hash(record["settings"]) == recorded
    # the settings as this version builds them (every field it knows, defaults filled in) hash the same
    assert build_config(record["settings"], str(settings_file)).settings_hash() == recorded
    result = settings_file.parent / "result.json"
    if result.exists():
        assert json.loads(result.read_text())["settings_hash"] == recorded


def test_a_setting_that_differs_changes_the_hash():
    settings = json.loads(RECORDED[0].read_text())["settings"]
    base = settings_hash(settings)
    assert settings_hash({**settings, "sparsity": 0.5}) != base
    assert settings_hash({**settings, "sync_batchnorm": True}) != base  # a later key, set
    assert settings_hash({**settings, "sync_batchnorm": False}) == base  # a later key at its default
    assert settings_hash({**settings, "out": "elsewhere", "device": "cpu"}) == base
