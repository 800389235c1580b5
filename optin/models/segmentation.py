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


def load_checkpoint(path):
    return load_segmenter(path)


def save_checkpoint(model, path) -> None:
    model.save_pretrained(path)


def prepare(job):
    """A Mask2Former from the hub or built from a config (then trained here), with its per-layer unit MACs."""
    from optin.arch import adapter_for
    from optin.data.segmentation import open_segmentation_split
    from optin.models import encoder_structure

    if job.source["kind"] in ("hub", "local"):
        from transformers import AutoImageProcessor

        model = load_segmenter(job.pretrained_dir)
        AutoImageProcessor.from_pretrained(job.pretrained_dir).save_pretrained(job.checkpoint)
    else:
        model = mask2former_from_config(job.num_labels, job.source["swin_config"], job.source["decoder_config"], job.seed)
    adapter = adapter_for(model, "mask2former_swin")
    info = encoder_structure(adapter, job)
    split_file, source_file = job.data
    test = open_segmentation_split(split_file, source_file, "test", job.pretrained_dir)
    if job.training:
        cfg = job.training
        train = open_segmentation_split(split_file, source_file, "train", job.pretrained_dir)
        model = train_segmenter(model, train, steps=cfg["steps"], lr=cfg["lr"], batch_size=cfg["batch_size"], seed=job.seed)
        adapter = adapter_for(model, "mask2former_swin")
        scores = segmentation_metrics(predict(model, test), test.masks, len(test.class_names))
        info.update({"training_dataset": cfg["dataset"], "test_miou": scores["miou"],
                     "test_pixel_accuracy": scores["pixel_accuracy"], "test_iou_per_class": scores["iou_per_class"]})
        print(f"test mIoU: {scores['miou']:.4f}, pixel accuracy {scores['pixel_accuracy']:.4f}")
    # Unit MACs depend on the input size the model sees (after the checkpoint's own preprocessing).
    input_size = list(test.pixels([0]).shape[-2:])
    grid = adapter.patch_grid(input_size)
    head_macs, neuron_macs = adapter.unit_macs(grid)
    info.update({"input_size": input_size, "patch_grid": list(grid), "layer_widths": adapter.layer_widths(),
                 "head_macs_per_layer": head_macs, "neuron_macs_per_layer": neuron_macs, "class_names": test.class_names})
    return model, info


def calibration(adapter, job):
    """Canvases from the pool; no labels (Kwon et al.'s method is not defined for this family)."""
    from optin.data.segmentation import open_segmentation_split
    from optin.models import image_calibration

    split_file, source_file = job.data
    pool = open_segmentation_split(split_file, source_file, "calib_pool", job.checkpoint)
    return image_calibration(adapter, pool, job, labelled=False)
