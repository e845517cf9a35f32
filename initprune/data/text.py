"""Real text from Debian's ``fortunes`` package: byte-level language modelling and topic classification.

The package puts about 15,000 short texts (2.5 MB of English) in ``/usr/share/games/fortunes``, one topic
file each (``computers``, ``definitions``, ``science``, ...), texts separated by lines holding ``%`` alone.

* **Texts.** A text is the bytes between two ``%`` lines, blank lines around it stripped; a text found
  twice (in one file or in two) is kept once, in the first topic file in name order, so that no text can
  land in two splits.
* **Test split, by text, stratified.** Within each topic file the texts are ordered by the SHA-256 of their
  bytes, and every tenth (positions 9, 19, ...) is a test text: 10 % of every topic, the same on every
  machine, independent of the file order. The validation split is held out of the remaining training
  texts by ``load_dataset`` (whole texts or blocks of texts, see below), also never sharing a text.
* **fortunes_lm.** Byte tokens (vocabulary 256). The texts of a split, in hash order, each followed by the
  separator ``\\n%\\n`` (so the model learns where a text ends), are packed into blocks of whole texts of at
  least 8 × ``seq_len`` bytes; each block is cut into windows of ``seq_len`` inputs whose targets are the
  next bytes. The last window of a block is padded (input byte 0, target −100: not counted by
  ``token_cross_entropy``). A block is the unit of the validation hold-out (``groups``), so windows of one
  text never land in two splits.
* **fortunes_topic.** One sample per text: its first ``seq_len`` bytes, padded with byte 0 (which no text
  holds; ``transformer_cls`` masks it), labelled by its topic file. Topics with at least ``min_texts``
  (default 300) distinct texts are classes; smaller topics are dropped (``small_topics="drop"``, the
  default) or merged into one class ``other`` (``small_topics="merge"``). The validation hold-out is
  stratified by topic.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from ..errors import InitpruneError, unknown_choice
from .base import Source, candidate_dirs, check_data_dir, looked_in
from .loader import TensorData

SYSTEM_DIR = "/usr/share/games/fortunes"
HOW = f"Install them with `apt-get install fortunes` (files under {SYSTEM_DIR}), or pass data_dir"
SEPARATOR = b"\n%\n"
PAD = 0
IGNORE = -100
TEST_EVERY = 10
BLOCK_WINDOWS = 8
SMALL_TOPICS = ("drop", "merge")
_SPLIT = re.compile(rb"^%[ \t\r]*$", re.MULTILINE)


def _topic_files(folder: Path) -> list[Path]:
    """The topic files of a fortunes folder: regular files without a dot in their name (``.dat`` indexes
    and ``.u8`` links skipped) that hold at least one ``%`` line."""
    if not folder.is_dir():
        return []
    files = []
    for path in sorted(folder.iterdir()):
        if "." in path.name or path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as f:
            if _SPLIT.search(f.read()):
                files.append(path)
    return files


def find_fortunes(data_dir: str | os.PathLike | None) -> Path:
    """The first folder holding fortune topic files: ``data_dir`` (and ``data_dir/fortunes``) if given,
    else ``$INITPRUNE_DATA``, the Debian package's folder, the user cache; an error saying where it
    looked and how to get them."""
    check_data_dir(data_dir, HOW)
    dirs = candidate_dirs("fortunes", data_dir, [SYSTEM_DIR])
    for d in dirs:
        if _topic_files(d):
            return d
    raise InitpruneError(
        f"no fortune files (topic files of texts separated by '%' lines) in {looked_in(dirs)}. {HOW}."
    )


def locate(data_dir: str | os.PathLike | None = None) -> list[tuple[Path, bool]]:
    """The folders :func:`find_fortunes` reads from, in order, each with whether it holds topic files."""
    return [(d, bool(_topic_files(d))) for d in candidate_dirs("fortunes", data_dir, [SYSTEM_DIR])]


def read_texts(folder: Path) -> dict[str, list[bytes]]:
    """topic → its distinct texts in SHA-256 order (a text seen before, in an earlier file, is skipped)."""
    seen: set[bytes] = set()
    topics: dict[str, list[bytes]] = {}
    for path in _topic_files(folder):
        texts = []
        for part in _SPLIT.split(path.read_bytes()):
            text = part.strip(b"\r\n")
            if text.strip() and text not in seen:
                seen.add(text)
                texts.append(text)
        topics[path.name] = sorted(texts, key=lambda t: hashlib.sha256(t).digest())
    return {topic: texts for topic, texts in topics.items() if texts}


def split_texts(texts: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(train, test) of one topic's hash-ordered texts: every :data:`TEST_EVERY`-th text is a test text."""
    test = [t for i, t in enumerate(texts) if i % TEST_EVERY == TEST_EVERY - 1]
    train = [t for i, t in enumerate(texts) if i % TEST_EVERY != TEST_EVERY - 1]
    return train, test


def _check_seq_len(seq_len: object) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise InitpruneError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    return seq_len


def pack_windows(texts: list[bytes], seq_len: int) -> TensorData:
    """Language-modelling windows of whole texts packed into blocks (see the module docstring):
    inputs (N, seq_len) bytes, targets (N, seq_len) next bytes or −100, groups (N,) the block of each."""
    block_bytes = BLOCK_WINDOWS * seq_len
    blocks: list[bytes] = []
    current = bytearray()
    for text in texts:
        current += text + SEPARATOR
        if len(current) >= block_bytes:
            blocks.append(bytes(current))
            current = bytearray()
    if current:
        blocks.append(bytes(current))
    inputs, targets, groups = [], [], []
    for b, block in enumerate(blocks):
        stream = torch.frombuffer(bytearray(block), dtype=torch.uint8).long()
        for start in range(0, len(stream) - 1, seq_len):
            x = stream[start : start + seq_len]
            y = stream[start + 1 : start + seq_len + 1]
            inputs.append(torch.nn.functional.pad(x, (0, seq_len - len(x)), value=PAD))
            targets.append(torch.nn.functional.pad(y, (0, seq_len - len(y)), value=IGNORE))
            groups.append(b)
    return TensorData(torch.stack(inputs), torch.stack(targets), groups=torch.tensor(groups))


def encode_texts(texts: list[bytes], seq_len: int) -> torch.Tensor:
    """The first ``seq_len`` bytes of every text, padded with byte 0: (N, seq_len) int64."""
    out = torch.full((len(texts), seq_len), PAD, dtype=torch.long)
    for i, text in enumerate(texts):
        head = torch.frombuffer(bytearray(text[:seq_len]), dtype=torch.uint8)
        out[i, : len(head)] = head.long()
    return out


def load_fortunes_lm(data_dir: str | os.PathLike | None, seq_len: int = 128) -> Source:
    """``fortunes_lm``: byte-level language modelling on the fortunes texts (see the module docstring)."""
    seq_len = _check_seq_len(seq_len)
    folder = find_fortunes(data_dir)
    train_texts: list[bytes] = []
    test_texts: list[bytes] = []
    for texts in read_texts(folder).values():
        train, test = split_texts(texts)
        train_texts += train
        test_texts += test
    order = hashlib.sha256
    train_texts.sort(key=lambda t: order(t).digest())
    test_texts.sort(key=lambda t: order(t).digest())
    return Source(
        train=pack_windows(train_texts, seq_len),
        test=pack_windows(test_texts, seq_len),
        num_classes=256,
        input_shape=(seq_len,),  # type: ignore[arg-type]
        mean=(),
        std=(),
        augmentation="none",
        classes=[],
        root=folder,
    )


def load_fortunes_topic(
    data_dir: str | os.PathLike | None, seq_len: int = 128, min_texts: int = 300, small_topics: str = "drop"
) -> Source:
    """``fortunes_topic``: classify a text's topic file from its first ``seq_len`` bytes (see the module
    docstring for the class rule and the splits)."""
    seq_len = _check_seq_len(seq_len)
    if isinstance(min_texts, bool) or not isinstance(min_texts, int) or min_texts < 1:
        raise InitpruneError(f"min_texts must be an integer >= 1, got {min_texts!r}")
    if small_topics not in SMALL_TOPICS:
        raise unknown_choice("small_topics", small_topics, SMALL_TOPICS)
    folder = find_fortunes(data_dir)
    topics = read_texts(folder)
    classes = sorted(t for t, texts in topics.items() if len(texts) >= min_texts)
    small = sorted(t for t in topics if t not in classes)
    if small_topics == "merge" and small:
        classes.append("other")
    if len(classes) < 2:
        raise InitpruneError(
            f"min_texts={min_texts} leaves {len(classes)} topic(s) of {len(topics)} in {folder}; lower it"
        )
    parts: dict[str, list[tuple[bytes, int]]] = {"train": [], "test": []}
    for topic, texts in topics.items():
        label = (
            classes.index(topic)
            if topic in classes
            else (len(classes) - 1 if small_topics == "merge" else None)
        )
        if label is None:
            continue
        train, test = split_texts(texts)
        parts["train"] += [(t, label) for t in train]
        parts["test"] += [(t, label) for t in test]

    def data(pairs: list[tuple[bytes, int]]) -> TensorData:
        return TensorData(encode_texts([t for t, _ in pairs], seq_len), torch.tensor([c for _, c in pairs]))

    return Source(
        train=data(parts["train"]),
        test=data(parts["test"]),
        num_classes=len(classes),
        input_shape=(seq_len,),  # type: ignore[arg-type]
        mean=(),
        std=(),
        augmentation="none",
        classes=classes,
        root=folder,
        stratify=True,
    )
