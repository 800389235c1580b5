"""Mask2Former for semantic segmentation: building the small default model from a config, training it
on canvases (a few CPU minutes), predicting label maps and scoring them (mIoU, pixel accuracy)."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.nn import functional as F

from optin.arch.swin import semantic_scores
from optin.data.segmentation import IGNORE_INDEX, SegmentationSplit

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def mask2former_from_config(num_labels: int, swin: dict, decoder: dict, seed: int):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(seed)
    backbone = SwinConfig(out_features=STAGES[: len(swin["depths"])], **swin)
    return Mask2FormerForUniversalSegmentation(Mask2FormerConfig(backbone_config=backbone, num_labels=num_labels, **decoder))


def load_segmenter(path):
    from transformers import AutoModelForUniversalSegmentation

    return AutoModelForUniversalSegmentation.from_pretrained(path, trust_remote_code=True).eval()


def _targets(masks: np.ndarray) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mask2Former's training targets: one binary mask per class present, and the class ids."""
    mask_labels, class_labels = [], []
    for mask in masks:
        present = [c for c in np.unique(mask) if c != IGNORE_INDEX]
        mask_labels.append(torch.from_numpy(np.stack([mask == c for c in present])).float())
        class_labels.append(torch.tensor(present, dtype=torch.long))
    return mask_labels, class_labels


def train_segmenter(model, train: SegmentationSplit, *, steps: int, lr: float, batch_size: int, seed: int, log=print):
    """AdamW on Mask2Former's own loss (Hungarian matching, class CE, mask BCE + dice, auxiliary losses)."""
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        batch = generator.integers(0, len(train), batch_size)
        mask_labels, class_labels = _targets(train.masks[batch])
        loss = model(pixel_values=train.pixels(batch), mask_labels=mask_labels, class_labels=class_labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps:
            log(f"step {step}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    return model.eval()


@torch.no_grad()
def predict(model, split: SegmentationSplit, indices=None, batch_size: int = 50) -> np.ndarray:
    """Label maps at the ground-truth resolution: mask logits upsampled bilinearly, then
    argmax over sum_q softmax(class_q) * sigmoid(mask_q) (Mask2Former's semantic inference)."""
    indices = list(range(len(split))) if indices is None else list(indices)
    size = split.masks.shape[1:]
    out = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        result = model(pixel_values=split.pixels(chunk).to(next(model.parameters()).device))
        masks = F.interpolate(result.masks_queries_logits, size=size, mode="bilinear", align_corners=False)
        out.append(semantic_scores(result.class_queries_logits, masks).argmax(dim=1).cpu().numpy())
    return np.concatenate(out)


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> dict:
    """mIoU over the classes that occur in the prediction or the truth, per-class IoU, pixel accuracy."""
    valid = truth != IGNORE_INDEX
    p, t = pred[valid], truth[valid]
    confusion = np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    iou = np.where(present, intersection / np.maximum(union, 1), np.nan)
    return {"miou": float(np.nanmean(iou)), "pixel_accuracy": float(intersection.sum() / max(valid.sum(), 1)),
            "iou_per_class": [None if np.isnan(v) else float(v) for v in iou]}
