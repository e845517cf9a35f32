"""The MNIST family (MNIST, Fashion-MNIST): IDX files, gzipped or raw.

Looked for in ``data_dir`` (the folder itself or ``data_dir/<name>``), then the Debian package location,
then the user cache; downloaded into ``data_dir`` (or the cache) as a last resort where the network allows.
"""

from __future__ import annotations

import gzip
import http.client
import os
import shutil
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from ..errors import InitpruneError
from .base import Source, cache_dir, candidate_dirs, check_data_dir, looked_in
from .loader import TensorData

# IDX type codes (third header byte) -> big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
PARTS = {
    "train_images": ("train-images", "idx3"),
    "train_labels": ("train-labels", "idx1"),
    "test_images": ("t10k-images", "idx3"),
    "test_labels": ("t10k-labels", "idx1"),
}
FAMILY = {
    "fashion_mnist": {
        "title": "Fashion-MNIST",
        "system": "/usr/share/datasets/fashion-mnist",
        "package": "dataset-fashion-mnist",
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "mean": (0.2860,),
        "std": (0.3530,),
        "classes": "T-shirt/top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle boot".split("|"),
    },
    "mnist": {
        "title": "MNIST",
        "system": "/usr/share/datasets/mnist",
        "package": None,  # not packaged in Debian
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        "mean": (0.1307,),
        "std": (0.3081,),
        "classes": [str(d) for d in range(10)],
    },
}
DOWNLOAD_TIMEOUT_S = 10.0


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or raw, told apart by content) into an array of its declared shape.

    Header: two zero bytes, a type code, the number of dimensions, then each dimension as a big-endian
    uint32. A file whose header or length does not match raises :class:`InitpruneError` naming it.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise InitpruneError(f"cannot read IDX file {path}: {e}; the file is corrupt, delete it") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise InitpruneError(
            f"{path} is not an IDX file (header {raw[:4].hex() or 'empty'}: expected 00 00, a type code in "
            f"{sorted(IDX_DTYPES)}, and a dimension count >= 1); the file is corrupt, delete it"
        )
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise InitpruneError(f"{path} is truncated inside its IDX header ({ndim} dimensions declared)")
    shape = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - start != expected:
        raise InitpruneError(
            f"{path} is corrupt: its IDX header declares shape {shape} of {dtype.name} "
            f"({expected} data bytes) but it holds {len(raw) - start}; delete it and get the file again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


def find_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (``train-images-idx3-ubyte[.gz]`` or ``train-images.idx3-ubyte``)."""
    found = {}
    for part, (stem, kind) in PARTS.items():
        names = [f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"]
        hits = [folder / (n + ext) for n in names for ext in (".gz", "")]
        hit = next((p for p in hits if p.is_file()), None)
        if hit is None:
            return None
        found[part] = hit
    return found


def fetch(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``url`` to ``dest`` atomically: a temporary file in the same folder, then a rename."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        atomic_write(dest, lambda out: shutil.copyfileobj(response, out, 1 << 20))


def download(name: str, folder: Path) -> str | None:
    """Try to fetch the four gzipped files into ``folder``; returns None on success, else the reason."""
    for stem, kind in PARTS.values():
        filename = f"{stem}-{kind}-ubyte.gz"
        if (folder / filename).is_file():
            continue
        errors = []
        for mirror in FAMILY[name]["mirrors"]:
            try:
                fetch(mirror + filename, folder / filename)
                break
            except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
                errors.append(f"{mirror + filename}: {e}")
        else:
            return "; ".join(errors)
    return None


def how_to_get(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """How to get the IDX files of ``name``: its Debian package if there is one, else a download."""
    info = FAMILY[name]
    where = f"into {str(data_dir)!r}" if data_dir is not None else "into your data folder"
    how = f"Download them from {info['mirrors'][0]} {where}"
    if info["package"]:
        how = f"Install them with `apt-get install {info['package']}` (files under {info['system']}), or " + (
            how[0].lower() + how[1:]
        )
    return how


def missing_files(folder: Path) -> list[str]:
    """The IDX files of :data:`PARTS` that ``folder`` lacks, by their usual names."""
    missing = []
    for stem, kind in PARTS.values():
        names = [f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"]
        if not any((folder / (n + ext)).is_file() for n in names for ext in (".gz", "")):
            missing.append(f"{stem}-{kind}-ubyte[.gz]")
    return missing


def locate(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[Path, bool]]:
    """The folders :func:`load_idx_family` reads ``name`` from, in order, each with whether it holds the
    four IDX files."""
    dirs = candidate_dirs(name, data_dir, [FAMILY[name]["system"]])
    return [(d, find_files(d) is not None) for d in dirs]


def load_idx_family(name: str, data_dir: str | os.PathLike | None, download_ok: bool = True) -> Source:
    """Read MNIST or Fashion-MNIST from the first folder holding all four IDX files.

    A given ``data_dir`` must exist, and only it (and ``data_dir/<name>``) is read or downloaded into."""
    info = FAMILY[name]
    check_data_dir(data_dir, how_to_get(name))
    dirs = candidate_dirs(name, data_dir, [info["system"]])
    files = next((f for d in dirs if (f := find_files(d)) is not None), None)
    reason = "download=False"
    if files is None and download_ok:
        target = Path(data_dir).expanduser() if data_dir is not None else cache_dir(name)
        reason = download(name, target)
        files = find_files(target) if reason is None else None
    if files is None:
        how = f"Download them from {info['mirrors'][0]} into one of those folders (or pass data_dir)."
        if info["package"]:
            how = (
                f"Install them with `apt-get install {info['package']}` (files under {info['system']}), or "
                + (how[0].lower() + how[1:])
            )
        if data_dir is not None:
            how = how_to_get(name, data_dir) + "."
            where = "; ".join(
                f"{d} lacks {', '.join(missing_files(d))}" if d.is_dir() else f"{d} does not exist"
                for d in dirs
            )
            raise InitpruneError(
                f"{info['title']} not found in data_dir {str(data_dir)!r} (the only place read when "
                f"data_dir is given): {where}; could not download them ({reason}). {how}"
            )
        raise InitpruneError(
            f"{info['title']} not found: looked for train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte"
            f"[.gz], t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] in {looked_in(dirs)}, and "
            "could not "
            f"download them ({reason}). {how}"
        )
    arrays = {part: read_idx(p) for part, p in files.items()}
    data = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if (
            images.ndim != 3
            or labels.ndim != 1
            or images.shape[0] != labels.shape[0]
            or images.dtype != np.uint8
        ):
            raise InitpruneError(
                f"{info['title']} {split} files do not match: images {images.shape} {images.dtype} in "
                f"{files[f'{split}_images']}, labels {labels.shape} in {files[f'{split}_labels']}"
            )
        if labels.size and int(labels.max()) >= 10:
            raise InitpruneError(f"{files[f'{split}_labels']} has label {int(labels.max())} outside 0..9")
        data[split] = TensorData(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())
    h, w = data["train"].images.shape[2:]
    return Source(
        train=data["train"],
        test=data["test"],
        num_classes=10,
        input_shape=(1, h, w),
        mean=info["mean"],
        std=info["std"],
        augmentation="none",
        classes=list(info["classes"]),
        root=files["train_images"].parent,
    )
