"""The decoder-LLM peers, each on the same checkpoint and calibration tokens as OPTIN (docs/llm.md).

Every function takes a Llama adapter (optin.arch.llama) and a calibration batch of packed token
windows and returns a scores table (layer, kind, index, importance) for query heads ("head") and
MLP channel groups ("neuron"). Formulas follow each method's released code:

- ``flap`` (An et al. 2024, CASIA-LMC-Lab/FLAP, metric WIFV): for input channel j of o_proj or
  down_proj, the fluctuation Var_tokens(X_j) times the squared column norm ||W[:, j]||^2 (squared
  once more for o_proj, as their code). A head sums its channels, a channel group its channels.
  ``standardized``: FLAP's adaptive structure (AL-AM) standardizes each layer's channel metrics,
  z = (m - mean) / std over the layer's attention channels and over its MLP channels, and a head
  takes the mean of its channels' z (a channel group here the mean of its channels'). Their code
  assumes one KV head per query head; with GQA the fluctuation of o_proj's input is still per query
  head, so the metric is unchanged.
- ``wanda_sp`` (FLAP's Wanda-sp baseline): mean over output rows of |W_ij| * ||X_j||_2 per input
  channel of o_proj / down_proj, ||X_j||^2 being the sum over tokens of X_j^2 per calibration sequence.
- ``llm_pruner`` (Ma et al. 2023, LLM-Pruner, one-shot, ``taylor=param_first``, no LoRA): the sum of
  |W * dL/dW| over the group's weights, L the next-token cross-entropy on the calibration windows.
  A query head's group is its q rows and o columns plus, as GQA adaptation, 1/(H/K) of its KV
  head's k and v rows (LLM-Pruner's Llama code groups one K/V head per query head).
- ``minitron`` (Muralidharan et al. 2024, activation importance): a head's ||context vector||_2, a
  channel's |activation|, each averaged over a sequence's positions, then the L2 norm over the batch
  (their best aggregation, batch L2 and sequence mean); a channel group sums its channels.

FLAP, Wanda-sp and Minitron scores carry no loss scale shared by heads and channels (like weight
magnitude), so the common search divides each by its kind's mean in its layer and weighs it by the
unit's MACs (optin.engine.search.cost_weighted); LLM-Pruner's Taylor terms estimate loss changes and enter
the search as they are, as OPTIN's and Kwon's do.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch.nn import functional as F



def _table(head: list[torch.Tensor], neuron: list[torch.Tensor], **extra: tuple[list[torch.Tensor], list[torch.Tensor]]) -> pd.DataFrame:
    rows = []
    for kind, per_layer in (("head", head), ("neuron", neuron)):
        for layer, values in enumerate(per_layer):
            for index, value in enumerate(values.double().tolist()):
                row = {"layer": layer, "kind": kind, "index": index, "importance": value}
                for name, (h, n) in extra.items():
                    row[name] = float((h if kind == "head" else n)[layer][index])
                rows.append(row)
    return pd.DataFrame(rows)


def _per_head(values: torch.Tensor, head_dim: int, reduce: str = "sum") -> torch.Tensor:
    grouped = values.view(-1, head_dim)
    return grouped.sum(1) if reduce == "sum" else grouped.mean(1)


def _per_group(values: torch.Tensor, group: int, reduce: str = "sum") -> torch.Tensor:
    grouped = values.view(-1, group)
    return grouped.sum(1) if reduce == "sum" else grouped.mean(1)


def _standardized(metric: torch.Tensor) -> torch.Tensor:
    # torch.std: the unbiased estimate, as FLAP's standarlization
    return (metric - metric.mean()) / metric.std()


@torch.no_grad()
def flap_scores(adapter, batch) -> pd.DataFrame:
    """WIFV per head / channel group; column ``standardized`` holds FLAP's AL-AM scores."""
    heads, neurons, z_heads, z_neurons, means = [], [], [], [], []
    for layer, inputs in enumerate(adapter.projection_inputs(batch)):
        proj = adapter.projections(layer)
        attn = (inputs["o"].double().var(0, unbiased=False) * proj["o"].weight.double().pow(2).sum(0)) ** 2
        mlp = inputs["down"].double().var(0, unbiased=False) * proj["down"].weight.double().pow(2).sum(0)
        heads.append(_per_head(attn, adapter.head_dim))
        neurons.append(_per_group(mlp, adapter.neuron_group))
        z_heads.append(_per_head(_standardized(attn), adapter.head_dim, "mean"))
        z_neurons.append(_per_group(_standardized(mlp), adapter.neuron_group, "mean"))
        means.append({"head": inputs["o"].double().mean(0).view(-1, adapter.head_dim),
                      "neuron": inputs["down"].double().mean(0).view(-1, adapter.neuron_group)})
    table = _table(heads, neurons, standardized=(z_heads, z_neurons))
    # FLAP's baseline_inp: each input channel's mean over the calibration tokens, for bias compensation
    table["channel_means"] = [means[layer][kind][index].tolist()
                              for layer, kind, index in zip(table["layer"], table["kind"], table["index"], strict=True)]
    return table


def output_biases(adapter, removed: dict) -> list[dict[str, torch.Tensor]]:
    """Per layer, FLAP's compensation bias of o_proj and down_proj: sum over removed input channels j
    of mean_j * W[:, j], so that the pruned layer adds the removed channels' mean contribution."""
    biases = []
    for layer in range(adapter.num_layers):
        proj = adapter.projections(layer)
        entry = {}
        for name in ("o", "down"):
            weight = proj[name].weight
            pairs = removed[name][layer]
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
            if pairs:
                channels = torch.tensor([int(c) for c, _ in pairs], device=weight.device)
                values = torch.tensor([m for _, m in pairs], dtype=weight.dtype, device=weight.device)
                bias = weight[:, channels] @ values
            entry[name] = bias.detach()
        biases.append(entry)
    return biases


def with_output_biases(model, biases: list[dict[str, torch.Tensor]]):
    """A copy of ``model`` whose o_proj and down_proj carry ``biases`` (FLAP's compensated model, the
    reference its slim model must equal)."""
    import copy

    out = copy.deepcopy(model)
    for layer, entry in zip(out.model.layers, biases, strict=True):
        for module, bias in ((layer.self_attn.o_proj, entry["o"]), (layer.mlp.down_proj, entry["down"])):
            module.bias = torch.nn.Parameter(bias.clone().to(module.weight.dtype), requires_grad=False)
    return out


@torch.no_grad()
def wanda_sp_scores(adapter, batch) -> pd.DataFrame:
    sequences = len(batch["input_ids"])
    heads, neurons = [], []
    for layer, inputs in enumerate(adapter.projection_inputs(batch)):
        proj = adapter.projections(layer)
        metric = {}
        for name in ("o", "down"):
            norm = (inputs[name].double().pow(2).sum(0) / sequences).sqrt()
            metric[name] = (proj[name].weight.double().abs() * norm[None, :]).mean(0)
        heads.append(_per_head(metric["o"], adapter.head_dim))
        neurons.append(_per_group(metric["down"], adapter.neuron_group))
    return _table(heads, neurons)


@torch.no_grad()
def minitron_scores(adapter, batch) -> pd.DataFrame:
    n, t = batch["input_ids"].shape
    heads, neurons = [], []
    for inputs in adapter.projection_inputs(batch):
        context = inputs["o"].double().view(n, t, -1, adapter.head_dim).norm(dim=-1)   # [N, T, H]
        heads.append(context.mean(1).norm(dim=0))
        act = inputs["down"].double().abs().view(n, t, -1).mean(1).norm(dim=0)          # [I]
        neurons.append(_per_group(act, adapter.neuron_group))
    return _table(heads, neurons)


def lm_loss(adapter, batch) -> torch.Tensor:
    """Mean next-token cross-entropy of the calibration windows."""
    ids = batch["input_ids"]
    logits = adapter.masked_forward(batch)[2].view(*ids.shape, -1)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def llm_pruner_scores(adapter, batch) -> pd.DataFrame:
    model = adapter.model
    weights = [p for layer in range(adapter.num_layers) for p in
               (lin.weight for lin in adapter.projections(layer).values())]
    previous = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
        w.grad = None
    try:
        with torch.enable_grad():
            lm_loss(adapter, batch).backward()
        heads, neurons = [], []
        dh, group = adapter.head_dim, adapter.group_size
        with torch.no_grad():
            for layer in range(adapter.num_layers):
                s = {name: (lin.weight * lin.weight.grad).double().abs() for name, lin in adapter.projections(layer).items()}
                q = s["q"].sum(1).view(-1, dh).sum(1)
                o = s["o"].sum(0).view(-1, dh).sum(1)
                kv = (s["k"].sum(1) + s["v"].sum(1)).view(-1, dh).sum(1)   # per KV head
                heads.append(q + o + kv.repeat_interleave(group) / group)
                channels = s["gate"].sum(1) + s["up"].sum(1) + s["down"].sum(0)
                neurons.append(_per_group(channels, adapter.neuron_group))
    finally:
        for w in weights:
            w.grad = None
        for p, flag in zip(model.parameters(), previous, strict=True):
            p.requires_grad_(flag)
    return _table(heads, neurons)


def _peer(scores):
    def scorer(adapter, calibration, settings: dict, seed: int) -> pd.DataFrame:
        return scores(adapter, calibration.batch)

    scorer.__doc__ = f"The registry's scorer: {scores.__name__} on the calibration windows."
    return scorer


flap, wanda_sp, minitron, llm_pruner = (_peer(f) for f in (flap_scores, wanda_sp_scores, minitron_scores, llm_pruner_scores))
