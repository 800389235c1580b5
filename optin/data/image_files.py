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


IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def fashion_mnist_candidates(configured: str) -> tuple[str, ...]:
    return FASHION_MNIST_DIRS if configured == "auto" else (configured,)


def locate_fashion_mnist(configured: str, base_dir: Path) -> Path | None:
    """The configured directory, or with ``auto`` the first known location, holding all four
    files (relative paths are relative to ``base_dir``); None if there is none."""
    for candidate in fashion_mnist_candidates(configured):
        path = Path(candidate) if Path(candidate).is_absolute() else base_dir / candidate
        if not missing_fashion_mnist_files(path):
            return path
    return None


def missing_fashion_mnist_files(directory: Path) -> list[str]:
    return [name for pair in FASHION_MNIST_FILES.values() for name in pair if not (directory / name).is_file()]


def imagefolder_problem(root: Path) -> str | None:
    """Why ``root`` is not an ImageFolder tree, or None. Looks at the first class folder only (an
    ImageNet listing takes minutes); the full listing happens in the split rule."""
    if not root.is_dir():
        return f"{root} is not a directory"
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if any(f.suffix.lower() in IMAGE_EXTENSIONS for f in class_dir.iterdir()):
            return None
        return f"{class_dir} holds no {'/'.join(IMAGE_EXTENSIONS)} files"
    return f"{root} has no class subfolders (expected ImageFolder layout root/<class>/<image>)"
