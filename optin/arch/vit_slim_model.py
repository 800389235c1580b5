"""Slimmed HF vision transformers (ViT, DeiT, DINOv2 classifiers) and ToMe token merging.

Self-contained (torch + transformers only): `optin.arch.vit.HfVitAdapter.save_slim` copies this file
next to every saved slim checkpoint as `modeling_optin_vit.py`, so that
`AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True)` rebuilds it without
optin. The config carries the kept heads / neurons per layer and, for OPTIN-tau, the number of
tokens merged before each layer (`optin_token_merges`), which the forward applies with bipartite
soft matching (Bolya et al. 2023, "Token Merging"): size-weighted averages, proportional attention.
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    Dinov2ForImageClassification,
    ViTForImageClassification,
)
from transformers.modeling_outputs import ImageClassifierOutput


class ConstantBranch(nn.Module):
    """A sub-block with no unit left: it adds its output bias to every token."""

    def __init__(self, hidden_size, returns_tuple):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states, *args, **kwargs):
        out = self.bias.expand_as(hidden_states)
        return (out, None) if self.returns_tuple else out


def resize_layer(layer, hidden_size, head_dim, n_heads, n_neurons):
    attention = layer.attention
    if n_heads == 0:
        layer.attention = ConstantBranch(hidden_size, returns_tuple=True)
    else:
        width = n_heads * head_dim
        bias = attention.q_proj.bias is not None
        attention.q_proj = nn.Linear(hidden_size, width, bias=bias)
        attention.k_proj = nn.Linear(hidden_size, width, bias=bias)
        attention.v_proj = nn.Linear(hidden_size, width, bias=bias)
        attention.o_proj = nn.Linear(width, hidden_size)
        attention.num_attention_heads = n_heads
    if n_neurons == 0:
        layer.mlp = ConstantBranch(hidden_size, returns_tuple=False)
    else:
        layer.mlp.fc1 = nn.Linear(hidden_size, n_neurons)
        layer.mlp.fc2 = nn.Linear(n_neurons, hidden_size)


def bipartite_merge(x, size, r, prefix):
    """Merge ``r`` token pairs per image (ToMe bipartite soft matching on cosine similarity).

    x [N, T, D], size [N, T] (tokens each row stands for). The first ``prefix`` tokens (CLS,
    distillation token) are never merged. Tokens after the prefix alternate into sets A and B; the
    r A-tokens most similar to some B-token are averaged into it, weighted by size.
    """
    if r <= 0:
        return x, size
    head, rest = x[:, :prefix], x[:, prefix:]
    head_size, rest_size = size[:, :prefix], size[:, prefix:]
    while r > 0 and rest.shape[1] > 1:
        a, b = rest[:, ::2], rest[:, 1::2]
        sa, sb = rest_size[:, ::2], rest_size[:, 1::2]
        step = min(r, a.shape[1])
        similarity = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(1, 2)
        best, target = similarity.max(dim=-1)                                  # [N, Ta]
        order = best.argsort(dim=-1, descending=True, stable=True)
        merged, kept = order[:, :step], order[:, step:].sort(dim=-1).values
        d = x.shape[-1]
        weighted_b = b * sb.unsqueeze(-1)
        src = torch.gather(a * sa.unsqueeze(-1), 1, merged.unsqueeze(-1).expand(-1, -1, d))
        dst = torch.gather(target, 1, merged)
        weighted_b = weighted_b.scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, d), src)
        sb = sb.scatter_add(1, dst, torch.gather(sa, 1, merged))
        b = weighted_b / sb.unsqueeze(-1)
        a = torch.gather(a, 1, kept.unsqueeze(-1).expand(-1, -1, d))
        sa = torch.gather(sa, 1, kept)
        rest, rest_size = torch.cat([a, b], dim=1), torch.cat([sa, sb], dim=1)
        r -= step
    return torch.cat([head, rest], dim=1), torch.cat([head_size, rest_size], dim=1)


def size_bias(size):
    """Proportional attention: a key standing for s tokens gets log(s) added to its logits."""
    return size.log()[:, None, None, :].to(torch.float32)


class _MergingForward:
    """Shared by the slim classes: resized layers, then embeddings, layers with the merge schedule,
    final norm and the class head (``_logits``)."""

    backbone_name = ""
    prefix_tokens = 1

    def __init__(self, config):
        super().__init__(config)
        head_dim = config.hidden_size // config.num_attention_heads
        for layer, n_heads, n_neurons in zip(
            self.optin_layers, config.optin_heads_per_layer, config.optin_neurons_per_layer, strict=True
        ):
            resize_layer(layer, config.hidden_size, head_dim, n_heads, n_neurons)

    @property
    def optin_layers(self):
        backbone = getattr(self, self.backbone_name)
        return backbone.layers if hasattr(backbone, "layers") else backbone.encoder.layer

    def forward(self, pixel_values=None, labels=None, **kwargs):
        backbone = getattr(self, self.backbone_name)
        if self.backbone_name == "dinov2":
            x = backbone.embeddings(pixel_values)
        else:
            x = backbone.embeddings(pixel_values, interpolate_pos_encoding=True)
        merges = getattr(self.config, "optin_token_merges", None) or [0] * len(self.optin_layers)
        size = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
        for layer, r in zip(self.optin_layers, merges, strict=True):
            if r:
                x, size = bipartite_merge(x, size, r, self.prefix_tokens)
            merged = bool((size != 1).any())
            x = layer(x, attention_mask=size_bias(size) if merged else None)
        return ImageClassifierOutput(logits=self._logits(backbone.layernorm(x), size))


class OptinSlimViTForImageClassification(_MergingForward, ViTForImageClassification):
    backbone_name = "vit"

    def _logits(self, x, size):
        return self.classifier(x[:, 0])


class OptinSlimDeiTForImageClassification(_MergingForward, DeiTForImageClassification):
    backbone_name = "deit"
    prefix_tokens = 2

    def _logits(self, x, size):
        return self.classifier(x[:, 0])


class OptinSlimDeiTForImageClassificationWithTeacher(_MergingForward, DeiTForImageClassificationWithTeacher):
    backbone_name = "deit"
    prefix_tokens = 2

    def _logits(self, x, size):
        return (self.cls_classifier(x[:, 0]) + self.distillation_classifier(x[:, 1])) / 2


class OptinSlimDinov2ForImageClassification(_MergingForward, Dinov2ForImageClassification):
    backbone_name = "dinov2"

    def _logits(self, x, size):
        weight = size[:, 1:].unsqueeze(-1)
        patches = (x[:, 1:] * weight).sum(1) / weight.sum(1)
        return self.classifier(torch.cat([x[:, 0], patches], dim=1))


SLIM_CLASSES = {
    "ViTForImageClassification": OptinSlimViTForImageClassification,
    "DeiTForImageClassification": OptinSlimDeiTForImageClassification,
    "DeiTForImageClassificationWithTeacher": OptinSlimDeiTForImageClassificationWithTeacher,
    "Dinov2ForImageClassification": OptinSlimDinov2ForImageClassification,
}
