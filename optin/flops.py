"""MAC (multiply-accumulate) model of optin-method.md §6, the accounting of Kwon et al. 2022.

Only the per-layer attention and FFN matmuls count: embeddings, LayerNorm, softmax, biases, pooler
and classifier are excluded, so relative FLOPs = M_pruned / M_base.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def head_macs(seq_len: float, hidden: int, head_dim: int) -> float:
    """One attention head: Q/K/V projections, QK^T and PV, and its slice of the output projection."""
    return 4.0 * seq_len * hidden * head_dim + 2.0 * seq_len * seq_len * head_dim


def neuron_macs(seq_len: float, hidden: int) -> float:
    """One FFN neuron: its row of the up-projection and its column of the down-projection."""
    return 2.0 * seq_len * hidden


def encoder_macs(
    heads_per_layer: Sequence[int],
    neurons_per_layer: Sequence[int],
    seq_len: float | Sequence[float],
    hidden: int,
    head_dim: int,
) -> float:
    """MACs of an encoder keeping the given number of heads and neurons in each layer; ``seq_len``
    may be given per layer (a token-pruning schedule)."""
    if isinstance(seq_len, (int, float)):
        return sum(heads_per_layer) * head_macs(seq_len, hidden, head_dim) + sum(
            neurons_per_layer
        ) * neuron_macs(seq_len, hidden)
    return sum(
        h * head_macs(s, hidden, head_dim) + n * neuron_macs(s, hidden)
        for h, n, s in zip(heads_per_layer, neurons_per_layer, seq_len, strict=True)
    )


def count_linear_attention_macs(layers: Sequence[dict], seq_len: float | Sequence[float]) -> float:
    """Direct count from weight shapes, independent of the per-unit formulas above.

    ``layers`` holds, per encoder layer, the (out, in) shapes of the q/k/v/o and FFN Linear
    layers actually present in a (possibly slimmed) model and its head dim. Used to check that
    the slimmed model costs exactly what the search accounted for. ``seq_len`` may be given per
    layer (token pruning).
    """
    lengths = [float(seq_len)] * len(layers) if isinstance(seq_len, (int, float)) else list(seq_len)
    total = 0.0
    for layer, seq_len in zip(layers, lengths, strict=True):
        for out_features, in_features in layer["linears"]:
            total += seq_len * out_features * in_features
        # QK^T and PV: each kept head is a (s x d_h) @ (d_h x s) and a (s x s) @ (s x d_h).
        total += 2.0 * seq_len * seq_len * layer["attention_width"]
    return total


def count_module_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
