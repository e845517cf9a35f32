"""Dataset registry and loaders, on real files written in the real formats."""

from __future__ import annotations

import gzip
import pickle
import struct
import urllib.error
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from initprune.data import (
    DatasetSplits,
    TensorData,
    TensorLoader,
    datasets,
    idx,
    load_dataset,
    scoring_batches,
)
from initprune.data.loader import BatchTransform
from initprune.data.splits import holdout_indices
from initprune.errors import InitpruneError

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No test reads the user's cache or data folder, and none reaches the network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("INITPRUNE_DATA", raising=False)

    def no_network(url, dest, timeout=0):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(idx, "fetch", no_network)


# ---------------------------------------------------------------- writers of the real formats


def normalization_atol(mean: Sequence[float], std: Sequence[float]) -> float:
    """How far two float32 routes to (x / 255 - mean) / std may differ: each rounds a few times (the
    loader's fused x · scale + shift, the test's two steps), every rounding at most eps32 of the largest
    magnitude involved, |mean / std| + 1 / std; 8 roundings of that bound both routes' sum with room."""
    largest = max(abs(m) / s + 1 / s for m, s in zip(mean, std, strict=True))
    return 8 * torch.finfo(torch.float32).eps * largest


def write_idx(path: Path, array: np.ndarray, code: int = 0x08, compress: bool | None = None) -> None:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    dtype = np.dtype(idx.IDX_DTYPES[code])
    payload = header + array.astype(dtype).tobytes()
    compress = path.suffix == ".gz" if compress is None else compress
    path.write_bytes(gzip.compress(payload) if compress else payload)


def make_mnist_files(folder: Path, n_train=50, n_test=20, seed=0) -> dict[str, np.ndarray]:
    """Train files gzipped, test files raw; pixel values and balanced labels returned for comparison."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10)[::-1].astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", arrays["train_images"])
    write_idx(folder / "train-labels-idx1-ubyte.gz", arrays["train_labels"])
    write_idx(folder / "t10k-images-idx3-ubyte", arrays["test_images"])
    write_idx(folder / "t10k-labels-idx1-ubyte", arrays["test_labels"])
    return arrays


def write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(
    parent: Path, per_batch=8, n_test=6
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    data, labels = [], []
    for i in range(1, 6):
        d = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, 10, per_batch)]
        write_pickle(folder / f"data_batch_{i}", {b"batch_label": b"b", b"labels": lab, b"data": d})
        data.append(d)
        labels += lab
    td = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    tl = [int(v) for v in rng.integers(0, 10, n_test)]
    write_pickle(folder / "test_batch", {b"labels": tl, b"data": td, b"filenames": [b"x"] * n_test})
    write_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return np.concatenate(data), np.array(labels), td, np.array(tl)


def solid(color, size=(64, 64)) -> Image.Image:
    return Image.new("RGB", size, color)


def make_tiny(parent: Path) -> Path:
    """tiny-imagenet-200 with 2 wnids, 3 train images each and 4 val images, solid colours."""
    root = parent / "tiny-imagenet-200"
    wnids = ["n02", "n01"]  # not sorted on purpose: labels follow the sorted order
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w, wnid in enumerate(wnids):
        d = root / "train" / wnid / "images"
        d.mkdir(parents=True)
        for i in range(3):
            solid((40 * i + 10, 200 * w + 20, 100)).save(d / f"{wnid}_{i}.JPEG", quality=100)
    lines = []
    for i in range(4):
        name = f"val_{i}.JPEG"
        solid((30 * i, 60, 250 - 50 * i)).save(root / "val" / "images" / name, quality=100)
        lines.append(f"{name}\t{wnids[i % 2]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def make_imagenet(root: Path) -> Path:
    for split, count in (("train", 3), ("val", 2)):
        for c, cls in enumerate(["n_b", "n_a"]):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(count):
                rng = np.random.default_rng(100 * c + i)
                pixels = rng.integers(0, 256, (48 + 8 * i, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{cls}_{i}.JPEG", quality=95)
    return root


# ---------------------------------------------------------------- registry and options


def test_registry_lists_every_dataset():
    names = datasets()
    assert set(names) == {
        "fashion_mnist",
        "mnist",
        "cifar10",
        "cifar100",
        "tinyimagenet",
        "imagenet",
        "fortunes_lm",
        "fortunes_topic",
        "synthetic",
    }
    assert all(isinstance(d, str) and d for d in names.values())


def test_bad_names_and_options_are_refused(tmp_path):
    with pytest.raises(InitpruneError, match=r"unknown dataset 'cifar11'.*cifar10.*synthetic"):
        load_dataset("cifar11")
    with pytest.raises(InitpruneError, match=r"'colour'.*valid:.*num_classes"):
        load_dataset("synthetic", colour=True)
    with pytest.raises(InitpruneError, match="val_size=64 leaves no training data"):
        load_dataset("synthetic", val_size=64, train_size=64, test_size=8)
    with pytest.raises(InitpruneError, match="val_size"):
        load_dataset("synthetic", val_size=-1, train_size=64)
    with pytest.raises(InitpruneError, match="augmentation 'rotate'"):
        load_dataset("synthetic", val_size=0, train_size=8, augmentation="rotate")
    splits = load_dataset("synthetic", val_size=0, train_size=16, test_size=4, input_shape=(1, 4, 4))
    assert splits.val is None
    assert len(load_dataset("synthetic", val_size=np.int64(4), train_size=16, input_shape=(1, 2, 2)).val) == 4
    with pytest.raises(InitpruneError, match="val_size=0"):
        splits.loader("val")


# ---------------------------------------------------------------- IDX (MNIST family)


def test_idx_gz_and_raw_round_trip(tmp_path):
    arrays = make_mnist_files(tmp_path / "mnist")
    for data_dir in (tmp_path, tmp_path / "mnist"):  # the folder itself or its parent
        splits = load_dataset("mnist", data_dir=data_dir, val_size=10, seed=3, download=False)
        assert isinstance(splits, DatasetSplits)
        assert (splits.num_classes, splits.input_shape) == (10, (1, 28, 28))
        assert splits.mean == (0.1307,) and splits.std == (0.3081,)
        train_idx, val_idx = holdout_indices(50, 10, 3)
        images = torch.from_numpy(arrays["train_images"]).unsqueeze(1)
        labels = torch.from_numpy(arrays["train_labels"]).long()
        assert splits.train.images.dtype == torch.uint8
        assert torch.equal(splits.train.images, images[train_idx])
        assert torch.equal(splits.train.targets, labels[train_idx])
        assert torch.equal(splits.val.images, images[val_idx])
        assert torch.equal(splits.train_targets, labels[train_idx])
        assert torch.equal(splits.test.images[:, 0], torch.from_numpy(arrays["test_images"]))
        assert torch.equal(splits.test.targets, torch.from_numpy(arrays["test_labels"]).long())


def test_read_idx_other_types_and_dotted_names(tmp_path):
    values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 1000
    write_idx(tmp_path / "a.idx", values, code=0x0C, compress=True)
    assert np.array_equal(idx.read_idx(tmp_path / "a.idx"), values)
    floats = np.linspace(-1, 1, 10).astype(np.float32)
    write_idx(tmp_path / "b.idx", floats, code=0x0D)
    assert np.array_equal(idx.read_idx(tmp_path / "b.idx"), floats)
    arrays = make_mnist_files(tmp_path / "raw")
    for f in (tmp_path / "raw").iterdir():  # the original distribution's names: train-images.idx3-ubyte
        f.rename(f.with_name(f.name.replace("-idx", ".idx")))
    splits = load_dataset("mnist", data_dir=tmp_path / "raw", val_size=0, download=False)
    assert torch.equal(splits.train.images[:, 0], torch.from_numpy(arrays["train_images"]))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-7], "declares shape"),  # truncated data
        (lambda b: b + b"xx", "declares shape"),  # trailing bytes
        (lambda b: b"\x01\x02" + b[2:], "not an IDX file"),  # bad magic
        (lambda b: b[:2] + b"\x07" + b[3:], "not an IDX file"),  # unknown type code
        (lambda b: b[:6], "truncated inside its IDX header"),
        (lambda b: gzip.compress(b)[:40], "corrupt"),  # cut gzip stream
    ],
)
def test_corrupt_idx_gives_clear_error(tmp_path, damage, message):
    make_mnist_files(tmp_path)
    target = tmp_path / "t10k-images-idx3-ubyte"
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(InitpruneError, match=message) as info:
        load_dataset("mnist", data_dir=tmp_path, download=False, val_size=0)
    assert str(target) in str(info.value)


def test_missing_fashion_mnist_names_paths_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(idx.FAMILY["fashion_mnist"], "system", str(tmp_path / "not-installed"))
    calls = []

    def failing(url, dest, timeout=0):
        calls.append((url, dest))
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(idx, "fetch", failing)
    (tmp_path / "mine").mkdir()
    with pytest.raises(InitpruneError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path / "mine")
    message = str(info.value)
    assert str(tmp_path / "mine") in message and "t10k-labels-idx1-ubyte[.gz]" in message
    assert "the only place read" in message and f"{tmp_path / 'not-installed'} lacks" not in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "fashion-mnist.s3-website" in message and "no network" in message
    assert calls and calls[0][1].parent == tmp_path / "mine"  # the download was tried, into data_dir

    calls.clear()
    with pytest.raises(InitpruneError) as info:
        load_dataset("fashion_mnist")  # no data_dir: the system location and the cache are looked in
    message = str(info.value)
    assert str(tmp_path / "not-installed") in message and "apt-get install dataset-fashion-mnist" in message
    assert calls and calls[0][1].parent == tmp_path / "cache" / "initprune" / "fashion_mnist"


def test_a_given_data_dir_is_the_only_place_read(tmp_path, monkeypatch):
    """With the system copy present, a data_dir that is missing, empty or lacks one file is an error."""
    system = tmp_path / "system"
    make_mnist_files(system)
    monkeypatch.setitem(idx.FAMILY["mnist"], "system", str(system))
    assert load_dataset("mnist", val_size=0, download=False).root == system.resolve()
    with pytest.raises(InitpruneError, match="does not exist") as info:
        load_dataset("mnist", data_dir=tmp_path / "typo", download=False)
    assert str(tmp_path / "typo") in str(info.value) and "Download them from" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitpruneError, match="train-images-idx3-ubyte") as info:
        load_dataset("mnist", data_dir=tmp_path / "empty", download=False)
    assert f"{system} lacks" not in str(info.value) and "empty lacks" in str(info.value)
    partial = tmp_path / "partial"
    make_mnist_files(partial)
    (partial / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InitpruneError) as info:
        load_dataset("mnist", data_dir=partial, download=False)
    message = str(info.value)
    assert "lacks t10k-labels-idx1-ubyte[.gz]" in message and "train-images" not in message.split("lacks")[1]
    splits = load_dataset("mnist", data_dir=system, val_size=0, download=False)
    assert splits.root == system.resolve()


def test_download_fills_the_cache_atomically(tmp_path, monkeypatch):
    source = tmp_path / "server"
    arrays = make_mnist_files(source)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # the server only has .gz files
        (source / f"{stem}.gz").write_bytes(gzip.compress((source / stem).read_bytes()))
    monkeypatch.setattr(
        idx, "fetch", lambda url, dest, timeout=0: real_fetch(source.as_uri() + "/" + dest.name, dest)
    )
    monkeypatch.setitem(idx.FAMILY["mnist"], "system", str(tmp_path / "absent"))
    splits = load_dataset("mnist", val_size=0)  # no data_dir: downloads into the user cache
    cache = tmp_path / "cache" / "initprune" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"{s}.gz"
        for s in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    )
    assert torch.equal(splits.test.images[:, 0], torch.from_numpy(arrays["test_images"]))


real_fetch = idx.fetch


def test_fetch_leaves_no_partial_file(tmp_path):
    (tmp_path / "src.bin").write_bytes(b"payload")
    real_fetch((tmp_path / "src.bin").as_uri(), tmp_path / "out" / "dest.bin")
    assert (tmp_path / "out" / "dest.bin").read_bytes() == b"payload"
    with pytest.raises(OSError):
        real_fetch((tmp_path / "absent.bin").as_uri(), tmp_path / "out" / "other.bin")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dest.bin"]


# ---------------------------------------------------------------- CIFAR


def test_cifar10_pickles_round_trip(tmp_path):
    data, labels, test_data, test_labels = make_cifar10(tmp_path)
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        splits = load_dataset("cifar10", data_dir=data_dir, val_size=0)
        assert (splits.num_classes, splits.input_shape) == (10, (3, 32, 32))
        assert splits.classes == tuple(f"c{i}" for i in range(10))
        assert splits.augmentation == "crop_flip"
        assert torch.equal(splits.train.images, torch.from_numpy(data).view(-1, 3, 32, 32))
        assert splits.train.images[3, 1, 2, 5] == data[3, 1024 + 2 * 32 + 5]  # channel-major rows
        assert torch.equal(splits.train.targets, torch.from_numpy(labels))
        assert torch.equal(splits.test.images.flatten(1), torch.from_numpy(test_data))
        assert torch.equal(splits.test.targets, torch.from_numpy(test_labels))


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for split, n in (("train", 30), ("test", 10)):
        write_pickle(
            folder / split,
            {
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"fine_labels": list(range(n)),
                b"coarse_labels": [i % 20 for i in range(n)],
            },
        )
    fine = load_dataset("cifar100", data_dir=tmp_path, val_size=5)
    assert fine.num_classes == 100 and sorted(
        fine.train_targets.tolist() + fine.val.targets.tolist()
    ) == list(range(30))
    coarse = load_dataset("cifar100", data_dir=tmp_path, val_size=0, labels="coarse")
    assert coarse.num_classes == 20 and coarse.test.targets.tolist() == list(range(10))


def test_missing_cifar_names_path_and_url(tmp_path):
    with pytest.raises(InitpruneError) as info:
        load_dataset("cifar10", data_dir=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(info.value)


def test_corrupt_cifar_batch(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"\x80\x02garbage")
    with pytest.raises(InitpruneError, match="data_batch_2"):
        load_dataset("cifar10", data_dir=tmp_path)


# ---------------------------------------------------------------- image folders


def test_tinyimagenet_folder_and_in_memory(tmp_path):
    root = make_tiny(tmp_path)
    splits = load_dataset("tinyimagenet", data_dir=tmp_path, val_size=2, seed=0, num_workers=0)
    assert (splits.num_classes, splits.input_shape, splits.classes) == (2, (3, 64, 64), ("n01", "n02"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 4)
    assert splits.test.targets.tolist() == [1, 0, 1, 0]  # val_i annotated with wnids[i % 2] = n02, n01, ...
    for i in range(4):
        image, _ = splits.test[i]
        decoded = np.array(Image.open(root / "val" / "images" / f"val_{i}.JPEG").convert("RGB"))
        assert image.dtype == torch.uint8 and torch.equal(image.permute(1, 2, 0), torch.from_numpy(decoded))
        assert np.abs(decoded.astype(int) - [30 * i, 60, 250 - 50 * i]).max() <= 3  # solid colour survives
    memory = load_dataset("tinyimagenet", data_dir=root, val_size=2, seed=0, in_memory=True, num_workers=0)
    assert isinstance(memory.train, TensorData) and memory.train.images.shape == (4, 3, 64, 64)
    assert torch.equal(memory.test.images, torch.stack([splits.test[i][0] for i in range(4)]))
    assert torch.equal(memory.train_targets, splits.train_targets)
    # The same normalized evaluation batches from files and from memory.
    (xf, yf), (xm, ym) = next(iter(splits.loader("test", 4))), next(iter(memory.loader("test", 4)))
    atol = normalization_atol(splits.mean, splits.std)
    assert torch.equal(yf, ym) and torch.allclose(xf, xm, rtol=0, atol=atol)
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1)
    std = torch.tensor(splits.std).view(1, 3, 1, 1)
    assert torch.allclose(xm, (memory.test.images.float() / 255 - mean) / std, rtol=0, atol=atol)


def test_imagenet_transforms_and_worker_independence(tmp_path):
    make_imagenet(tmp_path / "imagenet")
    splits = load_dataset(
        "imagenet", data_dir=tmp_path, val_size=2, image_size=32, resize_size=36, num_workers=0
    )
    assert (splits.num_classes, splits.input_shape, splits.classes) == (2, (3, 32, 32), ("n_a", "n_b"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 4)
    image, label = splits.test[1]  # n_a_1.JPEG: 40 wide, 56 high -> 36 × 50, center 32 × 32
    img = Image.open(tmp_path / "imagenet" / "val" / "n_a" / "n_a_1.JPEG").convert("RGB").resize((36, 50), 2)
    expected = np.array(img.crop((2, 9, 34, 41)))
    assert label == 0 and torch.equal(image.permute(1, 2, 0), torch.from_numpy(expected))
    plain = [b for b in splits.loader("train", 3, num_workers=0, seed=5)]
    again = [b for b in splits.loader("train", 3, num_workers=0, seed=5)]
    workers = [b for b in splits.loader("train", 3, num_workers=2, seed=5)]
    other = [b for b in splits.loader("train", 3, num_workers=0, seed=6)]
    assert [x.shape for x, _ in plain] == [(3, 3, 32, 32), (1, 3, 32, 32)]
    for (x1, y1), (x2, _), (x3, y3) in zip(plain, again, workers, strict=True):
        assert torch.equal(x1, x2) and torch.equal(x1, x3) and torch.equal(y1, y3)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(plain, other, strict=True))
    batches = scoring_batches(splits, per_class=1, seed=0)
    assert batches[0][0].shape == (2, 3, 32, 32) and sorted(batches[0][1].tolist()) == [0, 1]


def test_missing_image_folders(tmp_path):
    with pytest.raises(InitpruneError, match=r"tiny-imagenet-200\.zip"):
        load_dataset("tinyimagenet", data_dir=tmp_path)
    with pytest.raises(InitpruneError, match=r"image-net\.org") as info:
        load_dataset("imagenet", data_dir=tmp_path / "x")
    assert str(tmp_path / "x") in str(info.value)


# ---------------------------------------------------------------- splits and scoring samples


def small_synthetic(seed=0, val_size=100, **kw) -> DatasetSplits:
    options = {"input_shape": (3, 8, 8), "train_size": 600, "test_size": 50, "num_classes": 5, **kw}
    return load_dataset("synthetic", val_size=val_size, seed=seed, **options)


def rows(t: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in t.flatten(1)}


def test_val_split_is_disjoint_and_seeded():
    a, b, c = small_synthetic(0), small_synthetic(0), small_synthetic(1)
    assert (len(a.train), len(a.val)) == (500, 100)
    assert not rows(a.train.images) & rows(a.val.images)
    assert rows(a.train.images) | rows(a.val.images) == rows(c.train.images) | rows(c.val.images)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.targets, b.train.targets)
    assert not torch.equal(a.val.images, c.val.images)
    assert not rows(a.test.images) & (rows(a.train.images) | rows(a.val.images))


def test_scoring_batches_per_class_from_train_only():
    splits = small_synthetic(val_size=200)
    (x, y), *rest = scoring_batches(splits, per_class=7, seed=0)
    assert not rest and x.shape == (35, 3, 8, 8)
    assert torch.bincount(y, minlength=5).tolist() == [7] * 5
    assert rows(x) <= rows(splits.train.images) and not rows(x) & rows(splits.val.images)
    assert torch.equal(x, scoring_batches(splits, per_class=7, seed=0)[0][0])
    assert rows(x) != rows(scoring_batches(splits, per_class=7, seed=1)[0][0])
    split = scoring_batches(splits, per_class=7, seed=0, batch_size=16)
    assert [len(b[1]) for b in split] == [16, 16, 3]
    assert torch.equal(torch.cat([b[0] for b in split]), x)
    with pytest.raises(InitpruneError, match="per_class=1000"):
        scoring_batches(splits, per_class=1000)


def test_scoring_augmentation_is_optional_and_seeded():
    splits = small_synthetic(augmentation="crop_flip")
    plain = scoring_batches(splits, per_class=4, seed=0)[0]
    aug = scoring_batches(splits, per_class=4, seed=0, augment=True)[0]
    assert torch.equal(plain[1], aug[1]) and not torch.equal(plain[0], aug[0])
    assert torch.equal(aug[0], scoring_batches(splits, per_class=4, seed=0, augment=True)[0][0])


def test_synthetic_is_learnable():
    splits = load_dataset("synthetic", val_size=0, input_shape=(1, 6, 6), train_size=1500, test_size=300)
    x, y = splits.train.images.flatten(1), splits.train.targets
    onehot = torch.nn.functional.one_hot(y, 10).float()
    weight = torch.linalg.lstsq(torch.cat([x, torch.ones(len(x), 1)], 1), onehot).solution
    xt = torch.cat([splits.test.images.flatten(1), torch.ones(300, 1)], 1)
    accuracy = ((xt @ weight).argmax(1) == splits.test.targets).float().mean()
    assert accuracy > 0.5  # chance is 0.1
    assert torch.bincount(y, minlength=10).min() > 50


# ---------------------------------------------------------------- the tensor loader


def indexed(n=100, shape=(3, 32, 32), seed=0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randint(1, 256, (n, *shape), generator=g, dtype=torch.uint8), torch.arange(n))


def test_loader_covers_each_sample_once_per_epoch():
    data = indexed(103)
    loader = TensorLoader(data, 10, shuffle=True, augmentation="crop_flip", seed=0)
    assert len(loader) == 11
    first = torch.cat([y for _, y in loader])
    second = torch.cat([y for _, y in loader])
    assert sorted(first.tolist()) == list(range(103)) == sorted(second.tolist())
    assert not torch.equal(first, second) and not torch.equal(first, torch.arange(103))
    dropped = TensorLoader(data, 10, drop_last=True)
    assert len(dropped) == 10 and sum(len(y) for _, y in dropped) == 100
    ordered = torch.cat([y for _, y in TensorLoader(data, 10, shuffle=False)])
    assert torch.equal(ordered, torch.arange(103))


def test_loader_same_seed_same_batches():
    data = indexed(40)
    a = [b for b in TensorLoader(data, 16, augmentation="crop_flip", seed=7)]
    b = [b for b in TensorLoader(data, 16, augmentation="crop_flip", seed=7)]
    c = [b for b in TensorLoader(data, 16, augmentation="crop_flip", seed=8)]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0][1], c[0][1])
    replay = TensorLoader(data, 16, augmentation="crop_flip", seed=7)
    epochs = [[x for x, _ in replay] for _ in range(2)]
    replay.set_epoch(1)
    assert all(torch.equal(p, q) for p, q in zip(epochs[1], [x for x, _ in replay], strict=True))


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 64, 64), (1, 28, 20)])
def test_crop_and_flip_are_real_shifts_of_the_padded_image(shape):
    data = indexed(64, shape)
    raw = data.images.float() / 255  # mean 0, std 1: the loader gives pixels / 255
    plain = next(iter(TensorLoader(data, 64, shuffle=False)))[0]
    assert torch.allclose(plain, raw, rtol=0, atol=normalization_atol([0.0], [1.0]))
    x, y = next(iter(TensorLoader(data, 64, shuffle=False, augmentation="crop_flip", seed=1)))
    assert x.shape == plain.shape and not torch.equal(x, plain)
    pixels = (x * 255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(data.images, (4, 4, 4, 4))
    h, w = shape[1:]
    flips = shifts = 0
    for image, label in zip(pixels, y.tolist(), strict=True):
        source = padded[label]
        windows = [(dy, dx, source[:, dy : dy + h, dx : dx + w]) for dy in range(9) for dx in range(9)]
        matches = [
            (dy, dx, f)
            for dy, dx, s in windows
            for f in (False, True)
            if torch.equal(image, s.flip(2) if f else s)
        ]
        assert len(matches) == 1  # exactly one crop window (and orientation) of the zero-padded original
        flips += matches[0][2]
        shifts += matches[0][:2] != (4, 4)
    assert 10 < flips < 54 and shifts > 40


def test_batch_transform_with_explicit_parameters():
    images = torch.arange(2 * 1 * 3 * 3, dtype=torch.uint8).view(2, 1, 3, 3) + 1
    transform = BatchTransform([0.0], [1.0 / 255], "cpu", "crop_flip", padding=1)
    params = torch.tensor([[0, 2, 0], [1, 1, 1]])  # shift down-left; no shift but flipped
    out = transform.augment(images, params)
    assert out[0, 0].tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]
    assert out[1, 0].tolist() == [[12, 11, 10], [15, 14, 13], [18, 17, 16]]
    assert torch.equal(transform(images), images.float())


# ---------------------------------------------------------------- the real Fashion-MNIST


@pytest.fixture(scope="module")
def fashion():
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{FASHION} is absent (apt-get install dataset-fashion-mnist)")
    return load_dataset("fashion_mnist", val_size=5000, seed=0, download=False)


def test_fashion_mnist_from_the_debian_package(fashion):
    assert (len(fashion.train), len(fashion.val), len(fashion.test)) == (55000, 5000, 10000)
    assert (fashion.num_classes, fashion.input_shape, fashion.augmentation) == (10, (1, 28, 28), "none")
    every = torch.cat([fashion.train_targets, fashion.val.targets])
    assert torch.bincount(every).tolist() == [6000] * 10
    assert torch.bincount(fashion.test.targets).tolist() == [1000] * 10
    assert fashion.train.images.dtype == torch.uint8 and fashion.train.images.device.type == "cpu"
    assert abs(fashion.train.images.float().mean().item() / 255 - 0.2860) < 0.005
    x, y = next(iter(fashion.loader("test", 1000)))
    expected = (fashion.test.images[:1000].float() / 255 - 0.2860) / 0.3530
    atol = normalization_atol([0.2860], [0.3530])
    assert torch.allclose(x, expected, rtol=0, atol=atol) and torch.equal(y, fashion.test.targets[:1000])
    batches = scoring_batches(fashion, per_class=10, seed=0)
    assert torch.bincount(batches[0][1]).tolist() == [10] * 10
