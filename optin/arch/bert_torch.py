"""BERT sequence classifiers in plain torch, for the text arm's scoring jobs.

A score shard reads a prepared checkpoint's weights and runs BertAdapter's functional forward; it
never calls the HF model's own forward. Importing transformers' model code for that costs a text
job ~2.4 s (transformers 5.23's `modeling_utils` loads torch._dynamo, torch.distributed.tensor,
sympy, scipy.optimize and torchvision), twice the cost of torch itself. This module builds the same
module tree (HF's attribute names and state-dict keys, so BertAdapter and Kwon's tuning address it
unchanged) from `config.json` and `model.safetensors`. Checkpoints it does not cover go through
transformers (`load_for_scoring`), and tests hold both models' scores equal.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

WEIGHTS = "model.safetensors"


def unsupported(config: dict) -> str | None:
    """Why this module cannot stand in for transformers on a checkpoint config, or None."""
    if config.get("model_type") != "bert" or config.get("architectures") != ["BertForSequenceClassification"]:
        return f"architecture {config.get('architectures')} (model_type {config.get('model_type')!r})"
    for key, expected in (("position_embedding_type", "absolute"), ("hidden_act", "gelu"), ("is_decoder", False),
                          ("add_cross_attention", False)):
        if config.get(key, expected) != expected:
            return f"{key}={config[key]!r} (this module implements {expected!r})"
    return None


class _Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        # HF's order of additions (word + token type, then position), for identical rounding.
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(positions))


def _linear_norm(c, fan_in: int) -> nn.Module:
    block = nn.Module()
    block.dense = nn.Linear(fan_in, c.hidden_size)
    block.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
    return block


def _layer(c) -> nn.Module:
    width = c.hidden_size
    self_attention = nn.Module()
    for name in ("query", "key", "value"):
        setattr(self_attention, name, nn.Linear(width, width))
    self_attention.scaling = (width // c.num_attention_heads) ** -0.5
    attention = nn.Module()
    attention.self = self_attention
    attention.output = _linear_norm(c, width)
    intermediate = nn.Module()
    intermediate.dense = nn.Linear(width, c.intermediate_size)
    intermediate.intermediate_act_fn = nn.GELU()
    layer = nn.Module()
    layer.attention, layer.intermediate, layer.output = attention, intermediate, _linear_norm(c, c.intermediate_size)
    return layer


class TorchBertForSequenceClassification(nn.Module):
    def __init__(self, config: SimpleNamespace, num_labels: int, pooler: bool = True):
        super().__init__()
        self.config = config
        self.bert = nn.Module()
        self.bert.embeddings = _Embeddings(config)
        self.bert.encoder = nn.Module()
        self.bert.encoder.layer = nn.ModuleList(_layer(config) for _ in range(config.num_hidden_layers))
        self.bert.pooler = None
        if pooler:
            self.bert.pooler = nn.Module()
            self.bert.pooler.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.bert.pooler.activation = nn.Tanh()
        self.classifier = nn.Linear(config.hidden_size, num_labels)


def load(path: str | Path) -> TorchBertForSequenceClassification:
    """The checkpoint at ``path`` (a dense BertForSequenceClassification saved by save_pretrained)."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    why = unsupported(config)
    if why:
        raise ValueError(f"{path}: plain-torch BERT cannot load {why}")
    return _build(path, config)


def _build(path: Path, config: dict) -> TorchBertForSequenceClassification:
    from safetensors.torch import load_file

    state = load_file(path / WEIGHTS)
    num_labels = state["classifier.weight"].shape[0]
    model = TorchBertForSequenceClassification(SimpleNamespace(**config), num_labels,
                                               pooler="bert.pooler.dense.weight" in state)
    # assign: the parameters are the loaded tensors, as transformers' loader leaves them; copying them
    # into fresh storage changes the memory alignment and with it the last bits of the CPU GEMMs'
    # gradients (Kwon's Fisher scores moved by 1e-7 relative; the forward did not).
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def load_for_scoring(path: str | Path):
    """Plain torch where the checkpoint allows it, transformers otherwise."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    why = unsupported(config) or (None if (path / WEIGHTS).exists() else f"no {WEIGHTS}")
    if why is None:
        return _build(path, config)
    print(f"{path}: loading through transformers ({why})")
    from optin.models.text import load_checkpoint

    return load_checkpoint(path)
