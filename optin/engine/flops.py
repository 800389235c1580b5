"""MAC (multiply-accumulate) model of optin-method.md §6, the accounting of Kwon et al. 2022.

Only the per-layer attention and FFN matmuls count: embeddings, LayerNorm, softmax, biases, pooler
and classifier are excluded, so relative FLOPs = M_pruned / M_base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def head_macs(seq_len: float, hidden: int, head_dim: int) -> float:
    """One attention head: Q/K/V projections, QK^T and PV, and its slice of the output projection."""
    return 4.0 * seq_len * hidden * head_dim + 2.0 * seq_len * seq_len * head_dim


def neuron_macs(seq_len: float, hidden: int) -> float:
    """One FFN neuron: its row of the up-projection and its column of the down-projection."""
    return 2.0 * seq_len * hidden


def window_head_macs(padded_tokens: float, hidden: int, head_dim: int, window_area: int) -> float:
    """One head of (shifted) window attention, Swin: Q/K/V and its output-projection slice on every
    token of the map padded to whole windows, QK^T and PV inside M x M windows (M^2 keys per query)."""
    return 4.0 * padded_tokens * hidden * head_dim + 2.0 * padded_tokens * window_area * head_dim


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


def count_window_attention_macs(layers: Sequence[dict], geometry: Sequence[dict]) -> float:
    """Direct count for windowed blocks from weight shapes (``Mask2FormerSwinAdapter.layer_linear_shapes``)
    and each block's ``tokens`` / ``padded_tokens`` / ``window_area``: attention Linears run on the
    padded map, the MLP on the real tokens."""
    total = 0.0
    for layer, geo in zip(layers, geometry, strict=True):
        total += sum(geo["padded_tokens"] * o * i for o, i in layer["attention_linears"])
        total += sum(geo["tokens"] * o * i for o, i in layer["ffn_linears"])
        total += 2.0 * geo["padded_tokens"] * geo["window_area"] * layer["attention_width"]
    return total


def measured_macs(module: torch.nn.Module, *args, **kwargs) -> tuple[float, dict[str, float]]:
    """MACs of one call as PyTorch's FlopCounterMode counts them (matmuls and convolutions, FLOPs / 2):
    the total and the count per module name. HF models run on a copy with eager attention, since the
    counter does not see the CPU SDPA kernels."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if hasattr(module, "set_attn_implementation"):
        module = copy.deepcopy(module)
        module.set_attn_implementation("eager")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*args, **kwargs)
    per_module = {name: sum(counts.values()) / 2.0 for name, counts in counter.get_flop_counts().items()}
    return counter.get_total_flops() / 2.0, per_module


def count_module_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# CNN channels (optin.arch.cnn describes each network as MacOps): every conv and linear counts.
@dataclass(frozen=True)
class MacOp:
    """One conv or linear: ``per_pair`` MACs per (input channel, output channel) pair. ``src``/``dst``
    name the prunable layer whose kept count is the input/output width, or None for a fixed width."""

    name: str
    per_pair: float
    src: int | None
    dst: int | None
    src_fixed: int = 0
    dst_fixed: int = 0

    def macs(self, counts) -> float:
        cin = self.src_fixed if self.src is None else counts[self.src]
        cout = self.dst_fixed if self.dst is None else counts[self.dst]
        return self.per_pair * cin * cout

    def to_json(self) -> dict:
        return dict(self.__dict__)


def network_macs(ops: list[MacOp], counts) -> float:
    return sum(op.macs(counts) for op in ops)


def llm_unit_macs(hidden: int, head_dim: int, context: int, channel_group: int) -> dict:
    """Per-unit MACs of a Llama decoder layer (optin.arch.llama.block_macs) on one sequence of
    ``context`` tokens: a query head (q rows, o columns, causal QK^T and PV over c(c+1)/2 pairs), a KV
    head (k and v rows; paid while any of its query heads is kept) and a group of MLP channels."""
    return {"head": 2.0 * context * hidden * head_dim + context * (context + 1) * head_dim,
            "kv": 2.0 * context * hidden * head_dim,
            "neuron": 3.0 * context * hidden * channel_group}


def llm_forward_macs(info: dict, windows: int, context: int, lm_head: bool = True) -> float:
    """MACs of one dense forward of ``windows`` calibration windows of ``context`` tokens, from
    model_info's sizes (optin.arch.llama.block_macs's accounting, plus the LM head)."""
    d, dh, layers = info["hidden_size"], info["head_dim"], info["num_layers"]
    per_token = layers * (2 * d * info["heads"] * dh + 2 * d * info["kv_heads"] * dh + 3 * d * info["intermediate_size"])
    attention = layers * context * (context + 1) * info["heads"] * dh
    head = context * d * info["vocab_size"] if lm_head else 0.0
    return float(windows * (context * per_token + attention + head))


def llm_scoring_macs(passes: str, info: dict, windows: int, context: int) -> float:
    """MACs a method spends scoring one calibration batch, by its ``scoring_passes`` (optin.methods.registry):
    per unit (OPTIN: each unit of layer l reruns layers l..L-1 and the LM head on the batch, the
    prefix cache skipping layers 0..l-1); a forward and a backward (~2x the forward, LLM-Pruner);
    one forward without the LM head (FLAP, Wanda-sp, Minitron); none (magnitude, random)."""
    if passes == "none":
        return 0.0
    full = llm_forward_macs(info, windows, context)
    if passes == "forward_backward":
        return 3.0 * full
    if passes == "forward":
        return llm_forward_macs(info, windows, context, lm_head=False)
    layers = info["num_layers"]
    per_layer = llm_forward_macs(info, windows, context, lm_head=False) / layers
    head = full - per_layer * layers
    units = info["heads"] + info["intermediate_size"] // info["channel_group"]
    return float(sum(units * ((layers - layer) * per_layer + head) for layer in range(layers)))
