"""NViT's Hessian-aware saliency (Yang et al., CVPR 2023, "Global Vision Transformer Pruning with
Hessian-Aware Saliency"), one-shot: a peer scored on the same checkpoints and calibration samples as
OPTIN and Kwon et al., through the same search.

For a structural group S (a head: its rows of Q, K and V, weights and biases; an FFN neuron: its row
of the up projection and its bias) and a mini-batch b of calibration samples with the task loss L_b,

    I_b(S) = ( sum_{w in S} w * dL_b/dw  /  c_S )^2,      importance(S) = mean_b I_b(S)

with NViT's per-type constant c_S (their ``pruning_engine_general.py``, method 23: a head's group is
divided by 6 for the head and 2 for its Q/K rows, 12 in all; MLP 1; QK 2; V 2; embedding 12). Their
code divides the summed contribution before squaring; so does this. The first-order Taylor sum is
the change of L when the whole group is scaled, a Hessian-aware saliency by their derivation.

Where this departs from NViT, all stated in the docs: one shot on the calibration batch instead of
pruning iteratively while training; cross-entropy on the labels instead of their distillation
loss; heads and neurons only (no QK / V dimensions or embedding channels as units).

``fisher_batch_size`` is the mini-batch whose summed contribution is squared, as for Kwon et al.
(``optin.methods.kwon``), who square a per-sample gradient (1) by default: the two differ in the gradient
(the mask's vs the group's weights') and in where the square is taken.

``latency_eta`` > 0 adds NViT's latency-aware term, importance - eta * (latency saved by removing
the unit from the dense model, seconds, from optin.engine.latency_table.LatencyTable); their default eta is 5e-4.
"""

from __future__ import annotations

import pandas as pd
import torch

from optin.methods.kwon import rows, task_loss
from optin.methods.registry import check_fisher_batch_size

# NViT's divisors per group type (their code, method 23), for the unit kinds slimmed here.
GROUP_CONSTANTS = {"head": 12.0, "neuron": 1.0}


def logits_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(**batch)
    return out if isinstance(out, torch.Tensor) else out.logits


def group_contributions(adapter, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Per unit kind and layer, sum over each group's parameters of w * dL/dw (one mini-batch's loss)."""
    names, dh = adapter.block_names, adapter.head_dim
    if names is None:
        raise NotImplementedError(f"{type(adapter).__name__} names no projections for NViT's groups")
    params = dict(adapter.model.named_parameters())
    wanted = {}
    for layer in range(adapter.num_layers):
        prefix = adapter.layer_prefix(layer)
        for proj in (*names.qkv, names.up):
            for suffix in ("weight", "bias"):
                name = f"{prefix}{proj}.{suffix}"
                if name in params:
                    wanted[name] = params[name]
    frozen = [p for p in wanted.values() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            loss = task_loss(logits_of(adapter.model, batch), labels)
            grads = dict(zip(wanted, torch.autograd.grad(loss, list(wanted.values())), strict=True))
    finally:
        for p in frozen:
            p.requires_grad_(False)

    def per_row(name: str) -> torch.Tensor:
        if name not in wanted:
            return None
        product = (wanted[name].detach().double() * grads[name].double())
        return product.reshape(product.shape[0], -1).sum(1)

    out = {"head": [], "neuron": []}
    for layer, (heads, neurons) in enumerate(zip(adapter.unit_counts("head"), adapter.unit_counts("neuron"), strict=True)):
        prefix = adapter.layer_prefix(layer)
        total = torch.zeros(heads * dh, dtype=torch.float64, device=adapter.device)
        for proj in names.qkv:
            for suffix in ("weight", "bias"):
                part = per_row(f"{prefix}{proj}.{suffix}")
                if part is not None:
                    total = total + part
        out["head"].append(total.view(heads, dh).sum(1))
        neuron = per_row(f"{prefix}{names.up}.weight") + per_row(f"{prefix}{names.up}.bias")
        out["neuron"].append(neuron.view(neurons))
    return out


def nvit_scores(adapter, batch: dict[str, torch.Tensor], labels: torch.Tensor, fisher_batch_size: int = 32,
                latency_eta: float = 0.0, latency_table=None) -> pd.DataFrame:
    """Scores table (layer, kind, index, saliency, latency_saved_s, importance) for the shared search."""
    check_fisher_batch_size(fisher_batch_size)
    if latency_eta and latency_table is None:
        raise ValueError("latency_eta > 0 needs the model's latency table")
    was_training = adapter.model.training
    adapter.model.eval()
    sums: dict[str, list[torch.Tensor]] | None = None
    batches = 0
    try:
        for start in range(0, len(labels), fisher_batch_size):
            stop = start + fisher_batch_size
            contributions = group_contributions(adapter, rows(batch, start, stop), labels[start:stop])
            squared = {kind: [(c / GROUP_CONSTANTS[kind]).pow(2) for c in layers] for kind, layers in contributions.items()}
            sums = squared if sums is None else {k: [a + b for a, b in zip(sums[k], squared[k], strict=True)] for k in sums}
            batches += 1
    finally:
        adapter.model.train(was_training)
        adapter.model.zero_grad(set_to_none=True)
    records = []
    for kind, layers in sums.items():
        saved = 0.0
        if latency_table is not None:
            full = latency_table.heads if kind == "head" else latency_table.neurons
            saved = float(latency_table.step_costs(kind, full)[-1])
        for layer, values in enumerate(layers):
            for index, value in enumerate((values / batches).tolist()):
                records.append({"layer": layer, "kind": kind, "index": index, "saliency": value, "latency_saved_s": saved,
                                "importance": value - latency_eta * saved})
    return pd.DataFrame(records, columns=["layer", "kind", "index", "saliency", "latency_saved_s", "importance"])


def score(adapter, calibration, settings: dict, seed: int) -> pd.DataFrame:
    """The registry's scorer (the model's own forward: the gradients are the real weights')."""
    return nvit_scores(adapter, calibration.batch, calibration.labels, settings["fisher_batch_size"],
                       settings["latency_eta"], calibration.latency_table)
