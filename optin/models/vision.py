"""Image classifiers: the converted DINOv2-S/14 with a linear head trained here, hub ViT/DeiT checkpoints."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from optin.data.images import ImageSplit
from optin.models import dinov2_onnx


def dinov2_classifier(num_labels: int, seed: int):
    """Dinov2ForImageClassification around the converted ONNX backbone (head freshly initialised)."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    backbone = dinov2_onnx.convert(dinov2_onnx.onnx_path())
    torch.manual_seed(seed)
    model = Dinov2ForImageClassification(Dinov2Config(**dinov2_onnx.DINOV2_S14, num_labels=num_labels)).eval()
    model.dinov2.load_state_dict(backbone.state_dict(), strict=True)
    return model


def load_classifier(path):
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(path).eval()


@torch.no_grad()
def head_inputs(model, pixels: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """What the classifier sees: [CLS, mean of patch tokens] (DINOv2) or CLS (ViT), after the final norm."""
    if not hasattr(model, "classifier"):
        raise TypeError(f"{type(model).__name__} has no single `classifier` head to train")
    dinov2 = hasattr(model, "dinov2")
    out = []
    for start in range(0, len(pixels), batch_size):
        h = model.base_model(pixel_values=pixels[start : start + batch_size]).last_hidden_state
        out.append(torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=1) if dinov2 else h[:, 0])
    return torch.cat(out)


def train_linear_head(model, train: ImageSplit, *, epochs: int, lr: float, weight_decay: float, seed: int, log=print):
    """Full-batch AdamW on frozen backbone features (the linear probe of the DINOv2 paper, simplified)."""
    features = head_inputs(model, train.pixels(np.arange(len(train))))
    labels = torch.as_tensor(train.labels)
    torch.manual_seed(seed)
    head = model.classifier
    head.reset_parameters()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for epoch in range(epochs):
        loss = F.cross_entropy(head(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if epoch % 50 == 0 or epoch == epochs - 1:
            log(f"epoch {epoch + 1}/{epochs} loss {loss.item():.4f}")
    return model.eval()


@torch.no_grad()
def predict(model, split: ImageSplit, batch_size: int = 250) -> np.ndarray:
    out = []
    for start in range(0, len(split), batch_size):
        pixels = split.pixels(np.arange(start, min(start + batch_size, len(split))))
        out.append(model(pixel_values=pixels.to(next(model.parameters()).device)).logits.argmax(-1).cpu().numpy())
    return np.concatenate(out)


def accuracy(model, split: ImageSplit) -> float:
    return float((predict(model, split) == split.labels).mean())


def patch_grid(model, image_size: int) -> int:
    """Patches per side at ``image_size``; the size must be a multiple of the patch size."""
    patch = model.config.patch_size
    if image_size % patch:
        raise ValueError(f"image_size {image_size} is not a multiple of the model's patch size {patch}")
    return image_size // patch


def patch_embedding_macs(model, image_size: int) -> float:
    """The patch-embedding convolution: patches x hidden x (3 x p x p). Reported, not searched."""
    grid = patch_grid(model, image_size)
    return float(grid * grid * model.config.hidden_size * model.config.num_channels * model.config.patch_size**2)
