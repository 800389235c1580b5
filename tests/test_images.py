import gzip

import numpy as np
import pytest
import torch

from optin.data import images
from optin.models import dinov2_onnx


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion_mnist(tmp_path):
    rng = np.random.default_rng(0)
    for part, n in (("train", 50), ("t10k", 20)):
        images_file, labels_file = images.FASHION_MNIST_FILES[part]
        write_idx(tmp_path / images_file, rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / labels_file, rng.integers(0, 10, n))
    return tmp_path


def test_idx_reader_and_split(fake_fashion_mnist, tmp_path):
    x, y = images.read_fashion_mnist(fake_fashion_mnist, "train")
    assert x.shape == (50, 28, 28) and y.shape == (50,)
    split = images.make_split(50, 20, train=30, test=10, calib_pool=12, seed=3)
    assert not set(split["train"]) & set(split["calib_pool"])
    assert len(split["test"]) == 10 and split == images.make_split(50, 20, 30, 10, 12, 3)
    (tmp_path / "split.json").write_text(__import__("json").dumps(split))
    test = images.load_split(tmp_path / "split.json", fake_fashion_mnist, "test", 56)
    assert test.pixels([0, 1]).shape == (2, 3, 56, 56)
    with pytest.raises(ValueError, match="split.train"):
        images.make_split(50, 20, train=45, test=10, calib_pool=12, seed=0)


def test_preprocess_normalises_with_imagenet_statistics():
    white = np.full((1, 28, 28), 255, dtype=np.uint8)
    x = images.preprocess(white, 28)
    expected = (1.0 - torch.tensor(images.IMAGENET_MEAN)) / torch.tensor(images.IMAGENET_STD)
    torch.testing.assert_close(x[0, :, 0, 0], expected)


def test_missing_image_directory_names_the_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        images.find_fashion_mnist(str(tmp_path / "nowhere"), tmp_path)


def test_dinov2_conversion_matches_onnxruntime():
    model = dinov2_onnx.convert(dinov2_onnx.onnx_path())
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(22.06e6, rel=0.01)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert dinov2_onnx.verify(model, dinov2_onnx.onnx_path(), pixels, atol=1e-4) < 1e-4
    with pytest.raises(ValueError, match="224"):
        dinov2_onnx.verify(model, dinov2_onnx.onnx_path(), pixels[:, :, :56, :56], atol=1e-4)
