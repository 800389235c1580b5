"""Where the Fashion-MNIST IDX files live (import-light: the workflow checks them at parse time)."""

from __future__ import annotations

from pathlib import Path

FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
# Where `apt-get install dataset-fashion-mnist` puts the files, and where `make` unpacks the .deb
# without root (relative to the repository).
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist", ".deps/debian/usr/share/datasets/fashion-mnist")


def missing_fashion_mnist_files(directory: Path) -> list[str]:
    return [name for pair in FASHION_MNIST_FILES.values() for name in pair if not (directory / name).is_file()]
