"""Segmentation data: Fashion-MNIST canvases, Cityscapes layout and label mapping, mIoU."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optin.data import segmentation
from optin.data.images import find_fashion_mnist, read_fashion_mnist
from optin.models.segmentation import segmentation_metrics

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"clothing": [0, 1, 2, 3, 4, 6], "footwear": [5, 7, 9], "bag": [8]}


def test_canvas_recipe_is_seeded_and_test_items_come_from_t10k():
    labels = {"train": np.arange(600) % 10, "t10k": np.arange(300) % 10}
    counts = {"train": 40, "test": 20, "calib_pool": 8}
    first = segmentation.canvas_recipe(labels, counts, 64, (1, 2), GROUPS, seed=3)
    assert first == segmentation.canvas_recipe(labels, counts, 64, (1, 2), GROUPS, seed=3)
    assert first != segmentation.canvas_recipe(labels, counts, 64, (1, 2), GROUPS, seed=4)
    assert {item[0] for canvas in first["test"] for item in canvas} == {"t10k"}
    used = [(item[0], item[1]) for part in first.values() for canvas in part for item in canvas]
    assert len(used) == len(set(used))  # no item is pasted twice
    for part, canvases in first.items():
        for canvas in canvases:
            assert 1 <= len(canvas) <= 2
            for source, index, _, _, group in canvas:
                assert labels[source][index] in list(GROUPS.values())[group - 1]


def test_painted_masks_follow_the_pixel_threshold():
    item = np.zeros((28, 28), dtype=np.uint8)
    item[5:10, 5:10] = 200   # above 0.2 * 255
    item[12:14, 12:14] = 40  # below it: background in the mask, visible in the image
    images, masks = segmentation.paint_canvases([[["train", 0, 32, 4, 2]]], {"train": item[None]}, 64, 0.2)
    assert images[0, 37, 9] == 200 and images[0, 44, 16] == 40
    assert masks[0, 37:42, 9:14].tolist() == [[2] * 5] * 5
    assert masks.sum() == 2 * 25


def test_canvases_are_repainted_from_the_installed_fashion_mnist(tmp_path):
    directory = find_fashion_mnist("auto", ROOT)
    source = {"kind": "fashion_mnist_canvases", "dir": str(directory), "size": 64, "items": [1, 2], "threshold": 0.2,
              "classes": GROUPS}
    split_file, source_file = tmp_path / "split.json", tmp_path / "source.json"
    segmentation.write_canvas_split(source, {"train": 10, "test": 5, "calib_pool": 4, "seed": 0}, tmp_path, split_file, source_file)
    test = segmentation.open_segmentation_split(split_file, source_file, "test")
    assert len(test) == 5 and test.class_names == ["background", "clothing", "footwear", "bag"]
    pixels = test.pixels([0, 1])
    assert tuple(pixels.shape) == (2, 3, 64, 64) and float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
    images, _ = read_fashion_mnist(directory, "t10k")
    canvas = json.loads(split_file.read_text())["recipe"]["test"][0]
    _, index, r, c, group = canvas[0]
    item = images[index]
    # Item cells never overlap (28 px items + 4 px jitter in 32 px cells): the region is this item's.
    region = test.masks[0, r : r + 28, c : c + 28]
    assert (region[item > 51] == group).all() and (region[item <= 51] == 0).all()


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_cityscapes_layout_is_checked_and_label_ids_map_to_train_ids(tmp_path):
    root = tmp_path / "cityscapes"
    assert "leftImg8bit" in segmentation.cityscapes_problem(root)
    for part, city in (("train", "aachen"), ("val", "frankfurt")):
        _png(root / "leftImg8bit" / part / city / f"{city}_000000_000019_leftImg8bit.png", np.zeros((4, 8, 3), np.uint8))
    assert "gtFine" in segmentation.cityscapes_problem(root)
    ids = np.array([[7, 8, 26, 0], [33, 1, 255, 24]], dtype=np.uint8)
    for part, city in (("train", "aachen"), ("val", "frankfurt")):
        _png(root / "gtFine" / part / city / f"{city}_000000_000019_gtFine_labelIds.png", ids)
    assert segmentation.cityscapes_problem(root) is None
    label = root / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"
    assert segmentation.cityscapes_label(str(label)).tolist() == [[0, 1, 13, 255], [18, 255, 255, 11]]
    (root / "gtFine/val/frankfurt" / label.name).unlink()
    with pytest.raises(FileNotFoundError, match="no label map"):
        segmentation.cityscapes_pairs(root, "val")


def test_segmentation_metrics_match_a_hand_count():
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    result = segmentation_metrics(pred, truth, 3)
    # class 0: inter 1, union 3; class 1: inter 3, union 4; class 2: inter 1, union 2 (pixel 255 ignored)
    assert result["iou_per_class"] == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert result["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)
