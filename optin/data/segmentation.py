"""Semantic segmentation data: Fashion-MNIST canvases (the offline default) and Cityscapes (paper).

Canvases: Fashion-MNIST items pasted into the cells of a blank square canvas; a pixel brighter than
``threshold`` takes its item's class group, everything else is background (class 0). The split file
holds the recipe (which item goes where on which canvas), so the canvases are rebuilt exactly from
the installed IDX files; test canvases use only items of the official test set. Groups are sampled
uniformly, then an item within the group, so a rare group (bags) is as frequent as the others.

Cityscapes: `leftImg8bit/{train,val}/<city>/*_leftImg8bit.png` with
`gtFine/{train,val}/<city>/*_gtFine_labelIds.png`; label ids map to the 19 evaluation train ids
(255 = ignored), the mapping of cityscapesScripts' `labels.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from optin.data.images import describe_source, find_fashion_mnist, read_fashion_mnist

IGNORE_INDEX = 255
ITEM = 28  # Fashion-MNIST items are 28 x 28
# Cityscapes label id -> train id (cityscapesScripts labels.py); every other id is ignored.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle"]


@dataclass
class SegmentationSplit:
    pixels_fn: object          # indices -> [n, 3, H, W] model input
    masks: np.ndarray          # [N, H, W] class ids, IGNORE_INDEX where unlabelled
    class_names: list[str]
    images: np.ndarray | None = None  # [N, H, W(, 3)] uint8 for figures

    def pixels(self, indices) -> torch.Tensor:
        return self.pixels_fn(list(indices))

    def __len__(self) -> int:
        return len(self.masks)


# -- Fashion-MNIST canvases -------------------------------------------------------------------------
def canvas_cells(size: int) -> list[tuple[int, int]]:
    """Top-left corners of the item cells: a grid of size // 32 cells per side (4 px of jitter each)."""
    per_side = size // (ITEM + 4)
    if per_side < 1:
        raise ValueError(f"canvas size {size} px is smaller than one {ITEM + 4} px item cell")
    return [(r * (ITEM + 4), c * (ITEM + 4)) for r in range(per_side) for c in range(per_side)]


def canvas_recipe(labels: dict[str, np.ndarray], counts: dict[str, int], size: int, items: tuple[int, int],
                  groups: dict[str, list[int]], seed: int) -> dict:
    """Which item (source part, index) goes to which position of each canvas, per split part.

    ``labels`` holds the Fashion-MNIST labels of the 'train' and 't10k' parts; the 'test' canvases
    draw from t10k, 'train' and 'calib_pool' from train (disjoint items).
    """
    rng = np.random.default_rng(seed)
    cells = canvas_cells(size)
    low, high = items
    if not 1 <= low <= high <= len(cells):
        raise ValueError(f"items per canvas {list(items)} must lie in [1, {len(cells)}] for a {size} px canvas")
    unused = {part: {g: list(rng.permutation(np.nonzero(np.isin(lab, classes))[0]))
                     for g, classes in enumerate(groups.values(), start=1)}
              for part, lab in labels.items()}
    recipe = {}
    for part, n in counts.items():
        source = "t10k" if part == "test" else "train"
        canvases = []
        for _ in range(n):
            k = int(rng.integers(low, high + 1))
            spots = rng.permutation(len(cells))[:k]
            canvas = []
            for spot in spots:
                group = int(rng.integers(1, len(groups) + 1))
                pool = unused[source][group]
                if not pool:
                    raise ValueError(f"not enough Fashion-MNIST {source} items of group {group} for {counts}")
                r, c = cells[spot]
                jitter = rng.integers(0, 5, size=2)
                canvas.append([source, int(pool.pop()), int(r + jitter[0]), int(c + jitter[1]), group])
            canvases.append(canvas)
        recipe[part] = canvases
    return recipe


def paint_canvases(recipe: list, items: dict[str, np.ndarray], size: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, S, S], masks uint8 [N, S, S]) from a recipe part."""
    images = np.zeros((len(recipe), size, size), dtype=np.uint8)
    masks = np.zeros((len(recipe), size, size), dtype=np.uint8)
    cutoff = threshold * 255
    for i, canvas in enumerate(recipe):
        for source, index, r, c, group in canvas:
            item = items[source][index]
            region = (slice(r, r + ITEM), slice(c, c + ITEM))
            images[i][region] = np.maximum(images[i][region], item)
            masks[i][region][item > cutoff] = group
    return images, masks


def canvas_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 [n, S, S] -> [n, 3, S, S] in [-1, 1] (grey replicated to RGB)."""
    x = torch.from_numpy(images).float().div_(255.0).sub_(0.5).div_(0.5)
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def write_canvas_split(source: dict, split: dict, base_dir: Path, split_file: Path, source_file: Path) -> None:
    directory = find_fashion_mnist(source.get("dir", "auto"), base_dir)
    labels = {part: read_fashion_mnist(directory, part)[1] for part in ("train", "t10k")}
    counts = {part: split[part] for part in ("train", "test", "calib_pool")}
    recipe = canvas_recipe(labels, counts, source["size"], tuple(source["items"]), source["classes"], split["seed"])
    split_file.write_text(json.dumps({
        "kind": "fashion_mnist_canvases", "size": source["size"], "threshold": source["threshold"],
        "class_names": ["background", *source["classes"]], "groups": source["classes"],
        **{part: list(range(len(recipe[part]))) for part in counts}, "recipe": recipe,
    }) + "\n")
    source_file.write_text(json.dumps(describe_source(directory), indent=1) + "\n")


# -- Cityscapes ----------------------------------------------------------------------------------
def cityscapes_problem(root: Path) -> str | None:
    """Why ``root`` is not a Cityscapes tree, or None."""
    for part in ("train", "val"):
        images = root / "leftImg8bit" / part
        if not images.is_dir():
            return f"{images} is missing (expected leftImg8bit/{{train,val}}/<city>/*_leftImg8bit.png)"
        if not any(images.glob("*/*_leftImg8bit.png")):
            return f"{images} holds no <city>/*_leftImg8bit.png files"
        if not (root / "gtFine" / part).is_dir():
            return f"{root / 'gtFine' / part} is missing (expected gtFine/{{train,val}}/<city>/*_gtFine_labelIds.png)"
    return None


def cityscapes_pairs(root: Path, part: str) -> list[tuple[str, str]]:
    """(image, label-id map) paths of a Cityscapes part, sorted; every image must have its label."""
    pairs = []
    for image in sorted((root / "leftImg8bit" / part).glob("*/*_leftImg8bit.png")):
        label = root / "gtFine" / part / image.parent.name / image.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
        if not label.is_file():
            raise FileNotFoundError(f"Cityscapes image {image} has no label map {label}")
        pairs.append((str(image), str(label)))
    return pairs


def write_cityscapes_split(root: Path, split: dict, split_file: Path, source_file: Path) -> None:
    problem = cityscapes_problem(root)
    if problem:
        raise FileNotFoundError(problem)
    train, val = cityscapes_pairs(root, "train"), cityscapes_pairs(root, "val")
    rng = np.random.default_rng(split["seed"])
    pool = sorted(rng.permutation(len(train))[: split["calib_pool"]].tolist())
    test = [val[i] for i in sorted(rng.permutation(len(val))[: split["test"]])]
    split_file.write_text(json.dumps({
        "kind": "cityscapes", "class_names": CITYSCAPES_CLASSES, "train": [], "calib_pool": [train[i] for i in pool],
        "test": test,
    }) + "\n")
    source_file.write_text(json.dumps({"root": str(root.resolve()), "train_images": len(train), "val_images": len(val)}, indent=1) + "\n")


def cityscapes_label(path: str) -> np.ndarray:
    from PIL import Image

    ids = np.asarray(Image.open(path))
    lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        lookup[label_id] = train_id
    return lookup[ids]


# -- one reader for both ------------------------------------------------------------------------
def open_segmentation_split(split_file: str | Path, source_file: str | Path, part: str, checkpoint=None) -> SegmentationSplit:
    meta = json.loads(Path(split_file).read_text())
    if meta["kind"] == "fashion_mnist_canvases":
        directory = Path(json.loads(Path(source_file).read_text())["dir"])
        sources = {p: read_fashion_mnist(directory, p)[0] for p in ("train", "t10k")}
        images, masks = paint_canvases(meta["recipe"][part], sources, meta["size"], meta["threshold"])
        return SegmentationSplit(lambda idx: canvas_pixels(images[idx]), masks.astype(np.int64), meta["class_names"], images)
    from PIL import Image
    from transformers import AutoImageProcessor

    pairs = meta[part]
    processor = AutoImageProcessor.from_pretrained(checkpoint)
    masks = np.stack([cityscapes_label(label) for _, label in pairs]).astype(np.int64)

    def pixels(indices):
        return processor(images=[Image.open(pairs[i][0]).convert("RGB") for i in indices], return_tensors="pt")["pixel_values"]

    return SegmentationSplit(pixels, masks, meta["class_names"])
