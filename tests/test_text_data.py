"""The fortunes datasets: texts split by text (no text in two splits), deterministic, stratified topics."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from initprune.data import load_dataset, scoring_batches
from initprune.data.text import SEPARATOR, SYSTEM_DIR
from initprune.errors import InitpruneError

TOPICS = {"alpha": 60, "beta": 45, "gamma": 12}


def write_fortunes(folder: Path) -> dict[str, list[bytes]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = [b"tea", b"code", b"moon", b"cat", b"byte", b"rain", b"sun", b"law"]
    written = {}
    for topic, count in TOPICS.items():
        texts = [
            b" ".join(rng.choice(words) for _ in range(rng.randint(3, 60))) + f" {topic}{i}".encode()
            for i in range(count)
        ]
        texts.append(texts[0])  # a duplicate: kept once
        (folder / topic).write_bytes(b"\n%\n".join(texts) + b"\n%\n")
        (folder / f"{topic}.dat").write_bytes(b"\x00index")
        written[topic] = texts[:-1]
    return written


def lm_texts(data) -> set[bytes]:
    """The texts of an LM split, rebuilt from its windows block by block."""
    out = set()
    x, y, groups = data.images.cpu(), data.targets.cpu(), data.groups
    for g in groups.unique().tolist():
        rows = (groups == g).nonzero().flatten()
        stream = [int(x[rows[0], 0]), *y[rows][y[rows] != -100].tolist()]
        out |= {t for t in bytes(stream).split(SEPARATOR) if t}
    return out


def test_fortunes_lm_splits_by_text_and_is_deterministic(tmp_path):
    texts = write_fortunes(tmp_path)
    splits = load_dataset("fortunes_lm", data_dir=tmp_path, val_size=20, seed=0, seq_len=16)
    parts = {name: lm_texts(getattr(splits, name)) for name in ("train", "val", "test")}
    assert parts["train"].isdisjoint(parts["val"]) and parts["train"].isdisjoint(parts["test"])
    assert parts["val"].isdisjoint(parts["test"])
    every = {t for ts in texts.values() for t in ts}
    assert parts["train"] | parts["val"] | parts["test"] == every
    assert len(parts["test"]) == sum(n // 10 for n in TOPICS.values())  # every tenth text of each topic
    assert len(splits.val) >= 20 and splits.input_shape == (16,) and splits.num_classes == 256
    again = load_dataset("fortunes_lm", data_dir=tmp_path, val_size=20, seed=0, seq_len=16)
    assert torch.equal(again.train.images, splits.train.images)
    assert torch.equal(again.val.targets, splits.val.targets)
    other = load_dataset("fortunes_lm", data_dir=tmp_path, val_size=20, seed=1, seq_len=16)
    assert not torch.equal(other.val.images, splits.val.images)
    x, y = next(iter(splits.loader("train", batch_size=8)))
    assert x.dtype == torch.long and x.shape == (8, 16) and y.shape == (8, 16)
    counted = y != -100
    assert bool(((x[:, 1:] == y[:, :-1]) | ~counted[:, :-1]).all())  # targets are the next bytes
    (batch,) = scoring_batches(splits, seed=0, sequences=5)
    assert batch[0].shape == (5, 16) and batch[1].shape == (5, 16)


def test_fortunes_topic_is_stratified_and_states_its_class_rule(tmp_path):
    write_fortunes(tmp_path)
    splits = load_dataset("fortunes_topic", data_dir=tmp_path, val_size=21, seed=0, seq_len=24, min_texts=40)
    assert splits.classes == ("alpha", "beta")  # gamma (12 texts) dropped
    train = torch.bincount(splits.train.targets.cpu())
    val = torch.bincount(splits.val.targets.cpu())
    test = torch.bincount(splits.test.targets.cpu())
    assert val.tolist() == [12, 9] and test.tolist() == [6, 4]  # in proportion to 54 : 41
    assert (train + val + test).tolist() == [60, 45]
    texts = {
        name: {bytes(r.tolist()) for r in getattr(splits, name).images.cpu()} for name in ("train", "val")
    }
    assert texts["train"].isdisjoint(texts["val"])
    merged = load_dataset("fortunes_topic", data_dir=tmp_path, val_size=0, min_texts=40, small_topics="merge")
    assert merged.classes == ("alpha", "beta", "other") and merged.num_classes == 3
    assert int((merged.train.targets == 2).sum() + (merged.test.targets == 2).sum()) == 12
    x, _ = next(iter(merged.loader("test", batch_size=4)))
    assert x.dtype == torch.long and x.shape == (4, 128)


def test_fortunes_errors_name_the_value_and_the_fix(tmp_path):
    with pytest.raises(InitpruneError, match=r"no fortune files.*apt-get install fortunes"):
        load_dataset("fortunes_lm", data_dir=tmp_path)
    write_fortunes(tmp_path)
    with pytest.raises(InitpruneError, match="seq_len must be an integer >= 2, got 1"):
        load_dataset("fortunes_lm", data_dir=tmp_path, seq_len=1)
    with pytest.raises(InitpruneError, match="unknown small_topics 'keep'; valid: drop, merge"):
        load_dataset("fortunes_topic", data_dir=tmp_path, small_topics="keep")
    with pytest.raises(InitpruneError, match="min_texts=1000 leaves 0 topic"):
        load_dataset("fortunes_topic", data_dir=tmp_path, min_texts=1000)


@pytest.mark.skipif(not Path(SYSTEM_DIR).is_dir(), reason="Debian's fortunes is not installed")
def test_installed_fortunes_split_by_text():
    splits = load_dataset("fortunes_lm", val_size=1500, seed=0)
    parts = {name: lm_texts(getattr(splits, name)) for name in ("train", "val", "test")}
    assert parts["train"].isdisjoint(parts["val"]) and parts["train"].isdisjoint(parts["test"])
    assert parts["val"].isdisjoint(parts["test"])
    assert len(parts["train"]) > 10000 and len(splits.val) >= 1500
