"""TinyImageNet and ImageNet from their image-folder layouts."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InitpruneError
from .base import Source, candidate_dirs, looked_in
from .images import ImageFiles, decode_all, list_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_MEAN = (0.4802, 0.4481, 0.3975)
TINY_STD = (0.2302, 0.2265, 0.2262)
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


ARCHIVE_FOLDERS = {"tinyimagenet": ("tiny-imagenet-200",), "imagenet": ("ILSVRC2012",)}


def locate(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[Path, bool]]:
    """The folders an image-folder dataset is read from, in order, each with whether it holds ``train/``
    and ``val/``."""
    dirs = [x for d in candidate_dirs(name, data_dir) for x in (d, *(d / f for f in ARCHIVE_FOLDERS[name]))]
    return [(d, (d / "train").is_dir() and (d / "val").is_dir()) for d in dirs]


def find_root(name: str, data_dir: str | os.PathLike | None) -> tuple[Path | None, list]:
    found = locate(name, data_dir)
    return next((d for d, there in found if there), None), [d for d, _ in found]


def class_folder_samples(folder: Path, classes: list[str], sub: str = "") -> list[tuple[str, int]]:
    """``(path, label)`` for the images of ``folder/<class>/<sub>`` for each class present in ``folder``."""
    samples = []
    for label, cls in enumerate(classes):
        d = folder / cls / sub
        if d.is_dir():
            samples += [(str(p), label) for p in list_images(d)]
    return samples


def load_tinyimagenet(
    data_dir: str | os.PathLike | None, in_memory: bool = False, num_workers: int | None = None
) -> Source:
    """TinyImageNet-200 (``tiny-imagenet-200/{wnids.txt, train/<wnid>/images, val/images,
    val/val_annotations.txt}``). The official test split has no labels, so the official val split serves
    as the test split. ``in_memory=True`` decodes everything into uint8 tensors (about 1.2 GB)."""
    root, dirs = find_root("tinyimagenet", data_dir)
    if root is None:
        raise InitpruneError(
            f"TinyImageNet not found: looked for tiny-imagenet-200/{{train,val}} in {looked_in(dirs)}. "
            f"Download {TINY_URL} and unzip it into your data folder, then pass data_dir=<that folder>."
        )
    if (root / "wnids.txt").is_file():
        wnids = sorted(line.strip() for line in (root / "wnids.txt").read_text().splitlines() if line.strip())
    else:
        wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    index = {w: i for i, w in enumerate(wnids)}
    train = [(str(p), index[w]) for w in wnids for p in list_images(root / "train" / w / "images")]
    annotations = root / "val" / "val_annotations.txt"
    if annotations.is_file():
        test = []
        for n, line in enumerate(annotations.read_text().splitlines(), 1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in index:
                raise InitpruneError(
                    f"{annotations} line {n}: expected 'file<TAB>wnid<TAB>...', got {line!r}"
                )
            test.append((str(root / "val" / "images" / fields[0]), index[fields[1]]))
    else:  # a re-packaged copy with val/<wnid>/images
        test = class_folder_samples(root / "val", wnids, "images")
    if not train or not test:
        raise InitpruneError(f"TinyImageNet at {root} holds {len(train)} train and {len(test)} val images")
    source = Source(
        train=ImageFiles(train, style="fixed", mode="train", image_size=64),
        test=ImageFiles(test, style="fixed", mode="eval", image_size=64),
        num_classes=len(wnids),
        input_shape=(3, 64, 64),
        mean=TINY_MEAN,
        std=TINY_STD,
        augmentation="crop_flip",
        classes=wnids,
        root=root,
    )
    if in_memory:
        source.train = decode_all(source.train, num_workers)
        source.test = decode_all(source.test, num_workers)
    return source


def load_imagenet(
    data_dir: str | os.PathLike | None, image_size: int = 224, resize_size: int | None = None
) -> Source:
    """ImageNet (ILSVRC-2012) as ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``, classes sorted.

    Training: random resized crop to ``image_size`` and horizontal flip; evaluation: resize of the
    shorter side to ``resize_size`` (default ``image_size / 0.875``, 256 for 224) and center crop.
    """
    root, dirs = find_root("imagenet", data_dir)
    if root is None:
        raise InitpruneError(
            f"ImageNet not found: looked for train/<class>/ and val/<class>/ folders in {looked_in(dirs)}. "
            "Get ILSVRC-2012 from https://image-net.org/download.php, extract train and val, and sort the "
            "val images into one folder per class; then pass data_dir=<folder holding train and val>."
        )
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    stray = sorted(p.name for p in (root / "val").iterdir() if p.is_dir() and p.name not in set(classes))
    if stray:
        raise InitpruneError(f"{root / 'val'} has class folders missing from train: {stray[:5]}")
    train = class_folder_samples(root / "train", classes)
    test = class_folder_samples(root / "val", classes)
    if not train or not test:
        raise InitpruneError(
            f"ImageNet at {root} holds {len(train)} train and {len(test)} val images in class folders "
            "(the val images must be sorted into one folder per class)"
        )
    if int(image_size) < 1:
        raise InitpruneError(f"image_size must be >= 1, got {image_size!r}")
    kwargs = {"style": "imagenet", "image_size": image_size, "resize_size": resize_size}
    return Source(
        train=ImageFiles(train, mode="train", **kwargs),
        test=ImageFiles(test, mode="eval", **kwargs),
        num_classes=len(classes),
        input_shape=(3, int(image_size), int(image_size)),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augmentation="none",  # the random resized crop and flip happen per image in PIL
        classes=classes,
        root=root,
    )
