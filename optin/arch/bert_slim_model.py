"""Slimmed BERT sequence classifier with per-layer head and FFN widths.

This file is self-contained (torch + transformers only) because `optin.arch.bert.BertAdapter.slim`
copies it next to every saved slim checkpoint as `modeling_optin_bert.py`, so that
`AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)` rebuilds the
slim architecture without optin installed. transformers 5 dropped `prune_heads`, hence the class.
"""

import torch
from torch import nn
from transformers import BertForSequenceClassification


class AttentionBypass(nn.Module):
    """A layer that keeps no head: its attention block reduces to LayerNorm(x + output bias)."""

    def __init__(self, config):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(config.hidden_size))
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        return self.LayerNorm(hidden_states + self.bias), None


class FeedForwardSkip(nn.Module):
    def forward(self, hidden_states):
        return hidden_states


class FeedForwardBypass(nn.Module):
    """A layer that keeps no FFN neuron: the FFN block reduces to LayerNorm(a + output bias)."""

    def __init__(self, config):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(config.hidden_size))
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(input_tensor + self.bias)


def resize_layer(layer, config, n_heads, n_neurons):
    hidden = config.hidden_size
    head_dim = hidden // config.num_attention_heads
    if n_heads == 0:
        layer.attention = AttentionBypass(config)
    else:
        attn = layer.attention.self
        width = n_heads * head_dim
        attn.query = nn.Linear(hidden, width)
        attn.key = nn.Linear(hidden, width)
        attn.value = nn.Linear(hidden, width)
        attn.num_attention_heads = n_heads
        attn.all_head_size = width
        layer.attention.output.dense = nn.Linear(width, hidden)
    if n_neurons == 0:
        layer.intermediate = FeedForwardSkip()
        layer.output = FeedForwardBypass(config)
    else:
        layer.intermediate.dense = nn.Linear(hidden, n_neurons)
        layer.output.dense = nn.Linear(n_neurons, hidden)


class OptinSlimBertForSequenceClassification(BertForSequenceClassification):
    def __init__(self, config):
        super().__init__(config)
        heads = config.optin_heads_per_layer
        neurons = config.optin_neurons_per_layer
        for layer, n_heads, n_neurons in zip(self.bert.encoder.layer, heads, neurons, strict=True):
            resize_layer(layer, config, n_heads, n_neurons)
