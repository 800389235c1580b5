"""Image classifiers: a DeiT-style ViT trained here end to end, the converted DINOv2-S/14 with a
linear head trained here, hub ViT/DeiT checkpoints."""

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


class StructuredDropout:
    """During training, drop whole attention heads and FFN neurons per sample (DropHead-style),
    scaling the rest by 1 / (1 - p): the model learns not to lean on any single unit, which is
    what pruning removes. Hooks on the inputs of each layer's output projections (``o_proj``: the
    heads' concatenated contexts; ``fc2``: the FFN activations), removed on exit, so the saved
    checkpoint is a plain ViT."""

    def __init__(self, model, head_drop: float, neuron_drop: float):
        self.layers, self.heads = model.vit.layers, model.config.num_attention_heads
        self.head_drop, self.neuron_drop, self.handles = head_drop, neuron_drop, []

    @staticmethod
    def _dropper(p: float, groups: int | None):
        def hook(module, args):
            if not module.training or p == 0:
                return None
            x = args[0]
            width = x.shape[-1] if groups is None else groups
            keep = (torch.rand(x.shape[0], *([1] * (x.dim() - 2)), width, device=x.device) >= p).to(x.dtype) / (1 - p)
            if groups is not None:
                keep = keep.repeat_interleave(x.shape[-1] // groups, dim=-1)
            return (x * keep, *args[1:])
        return hook

    def __enter__(self):
        for layer in self.layers:
            self.handles.append(layer.attention.o_proj.register_forward_pre_hook(self._dropper(self.head_drop, self.heads)))
            self.handles.append(layer.mlp.fc2.register_forward_pre_hook(self._dropper(self.neuron_drop, None)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def train_vit(model, train: ImageSplit, *, epochs: int, lr: float, batch_size: int, weight_decay: float,
              label_smoothing: float = 0.1, head_drop: float = 0.0, neuron_drop: float = 0.0, seed: int, log=print):
    """Supervised end-to-end training (DeiT's recipe cut to what a CPU affords): AdamW, one-cycle
    schedule (10 % warm-up, cosine decay), label smoothing; element-wise dropout comes from the
    model's config, ``head_drop`` / ``neuron_drop`` drop whole units (StructuredDropout).
    Measured on Fashion-MNIST, 6 x 96, 5 epochs of 10,000 images, random pruning at 0.9 of the MACs
    (mean of 5 seeds): dropout 0.1 only 0.718 from 0.799 unpruned; + stochastic depth 0.1 0.667
    from 0.807; head_drop = neuron_drop = 0.1 with dropout 0.1 0.762 from 0.778; 0.2 each without
    element-wise dropout 0.789 from 0.796 (the default). No augmentation: over a few epochs it cost
    accuracy (0.60 with crop + flip vs 0.81 without, 6 x 64, 8 epochs)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pixels, labels = train.pixels(np.arange(len(train))), torch.as_tensor(train.labels)
    batches = len(train) // batch_size  # full batches only: every step sees the same batch size
    if batches == 0:
        raise ValueError(f"vit_training.batch_size {batch_size} is larger than the {len(train)} training images")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * batches, pct_start=0.1)
    model.train()
    with StructuredDropout(model, head_drop, neuron_drop):
        for epoch in range(epochs):
            order, total = rng.permutation(len(labels)), 0.0
            for b in range(batches):
                index = torch.as_tensor(order[b * batch_size : (b + 1) * batch_size])
                loss = F.cross_entropy(model(pixel_values=pixels[index]).logits, labels[index], label_smoothing=label_smoothing)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item()
            log(f"epoch {epoch + 1}/{epochs}: loss {total / batches:.4f}")
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


def load_checkpoint(path):
    return load_classifier(path)


def save_checkpoint(model, path) -> None:
    model.save_pretrained(path)


def latency_inputs(job, latency: dict, test=None) -> dict:
    """The batch latency is timed on (evaluate, the latency table): test images cycled to
    ``latency.batch_size``."""
    from optin.data.images import open_split
    from optin.models import cycled

    if test is None:
        split_file, source_file = job.data
        test = open_split(split_file, source_file, "test", job.image_size, job.checkpoint, pixels=job.pixels)
    return {"pixel_values": test.pixels(cycled(len(test), latency["batch_size"])).to(job.device)}


def evaluation(dense, job):
    """The ViT family's part of `evaluate` (optin.models.Evaluation), with OPTIN-tau's merges."""
    from optin.arch.base import encoder_macs_of, kept_unit_counts, pruned_encoder
    from optin.data.images import open_split
    from optin.models import Evaluation

    masks, merges = job.masks, job.masks.get("token_merges")
    adapter, kept = pruned_encoder(dense, masks, "vit")
    split_file, source_file = job.data
    test = open_split(split_file, source_file, "test", job.image_size, job.checkpoint, pixels=job.pixels)
    probe = {"pixel_values": test.pixels(range(min(64, len(test)))).to(job.device)}
    if merges:
        counts = []
        masked_logits = adapter.forward_merged(probe, merges, *adapter.kept_masks(kept), token_counts=counts)
        # The merge schedule must remove exactly the tokens the search accounted for.
        ran = [counts[0] - c for c in counts]
        if ran != masks["tokens_removed_per_layer"]:
            raise RuntimeError(f"token merging removed {ran} tokens per layer; the search accounted {masks['tokens_removed_per_layer']}")
    else:
        masked_logits = adapter.masked_logits(probe, kept)
    slim = adapter.slim(kept, token_merges=merges)
    adapter.save_slim(slim, job.slim_dir)
    pe = patch_embedding_macs(dense, job.image_size)
    return Evaluation(
        probe=probe, masked_logits=masked_logits, slim=slim,
        reload=lambda: adapter.load_slim(job.slim_dir),
        accuracy=lambda model: accuracy(model, test),
        recount=lambda model: encoder_macs_of(model, "vit", masks),
        latency_batch=latency_inputs(job, job.latency, test),
        extra={"image_size": job.image_size, "patch_embedding_macs": pe,
               "relative_macs_with_patch_embedding": (masks["achieved_macs"] + pe) / (masks["base_macs"] + pe),
               "tokens_merged": sum(merges) if merges else 0, "head_neuron_share": masks.get("head_neuron_share"),
               **kept_unit_counts(kept)})


def prepare(job):
    """DINOv2 converted from ONNX (checked against onnxruntime), a hub ViT/DeiT or a config-built ViT;
    a linear head trained here when the config says so."""
    from optin.arch import adapter_for
    from optin.data.images import open_split
    from optin.models import encoder_structure

    diff = None
    if job.source["kind"] == "dinov2_onnx":
        model = dinov2_classifier(job.num_labels, job.seed)
        # Fail the rule unless the conversion reproduces onnxruntime on real images.
        atol = job.source.get("verify_atol", 1e-4)
        split_file, source_file = job.data
        probe = open_split(split_file, source_file, "train", dinov2_onnx.ONNX_INPUT_SIZE)
        diff = dinov2_onnx.verify(model.dinov2, dinov2_onnx.onnx_path(), probe.pixels(range(4)), atol)
        print(f"DINOv2 conversion vs onnxruntime on 4 images: max |diff| = {diff:.2e} (tolerance {atol:.0e})")
    elif job.source["kind"] in ("hub", "local"):
        from transformers import AutoImageProcessor

        model = load_classifier(job.pretrained_dir)
        # The checkpoint's own preprocessing (resize, crop, mean/std) travels with it.
        AutoImageProcessor.from_pretrained(job.pretrained_dir).save_pretrained(job.checkpoint)
    else:
        from transformers import ViTConfig, ViTForImageClassification

        torch.manual_seed(job.seed)
        vit_config = dict(job.source["vit_config"])
        if job.pixels:  # the dataset's own pixel statistics: as many input channels as it has
            vit_config.setdefault("num_channels", job.pixels["channels"])
        model = ViTForImageClassification(ViTConfig(num_labels=job.num_labels, **vit_config)).eval()
    adapter = adapter_for(model, "vit")
    info = encoder_structure(adapter, job)
    info.update({"patch_size": model.config.patch_size, "prefix_tokens": adapter.prefix_tokens,
                 "num_channels": model.config.num_channels, "verify_max_abs_diff": diff})
    if job.training:
        cfg = job.training
        split_file, source_file = job.data
        patch_grid(model, job.image_size)
        train = open_split(split_file, source_file, "train", job.image_size, job.pretrained_dir, pixels=job.pixels)
        test = open_split(split_file, source_file, "test", job.image_size, job.pretrained_dir, pixels=job.pixels)
        if job.training_key == "vit_training":
            model = train_vit(model, train, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                              weight_decay=cfg["weight_decay"], label_smoothing=cfg.get("label_smoothing", 0.1),
                              head_drop=cfg.get("head_drop", 0.0), neuron_drop=cfg.get("neuron_drop", 0.0), seed=job.seed)
        else:
            model = train_linear_head(model, train, epochs=cfg["epochs"], lr=cfg["lr"], weight_decay=cfg["weight_decay"], seed=job.seed)
        info.update({f"{job.training_key}_dataset": cfg["dataset"], "test_accuracy": accuracy(model, test),
                     "image_size": job.image_size})
    return model, info


def calibration(adapter, job):
    from optin.models import labelled_image_calibration

    return labelled_image_calibration(adapter, job)
