"""Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers": the closest peer.

A head's or FFN neuron's importance is the diagonal of the empirical Fisher information of its mask
variable under the task loss, with every mask at 1:

    I(u) = sum_i (dL(x_i, y_i) / dm_u)^2      over the labelled calibration samples i.

Gradients are per sample (one backward each), as the Fisher's definition asks; a batch gradient
squared would add cross terms between samples. The search (``optin.search.search_mac``), slimming and
evaluation are OPTIN's, so the two methods differ only in their scores.

Kwon et al. also rearrange masks inside a layer (using the Fisher's off-diagonal block) and tune the
kept units' mask values by least squares; ``fisher_scores`` returns the per-sample gradients' diagonal
only (their "mask search" stage).
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classifiers; mean squared error for a single-output regressor (STS-B)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


def sample(batch: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {key: value[i : i + 1] for key, value in batch.items()}


def mask_gradients(adapter, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample gradients of the task loss w.r.t. every head and neuron mask, all masks at 1:
    ([N, total heads], [N, total neurons]), layer-major."""
    head_counts, neuron_counts = adapter.unit_counts("head"), adapter.unit_counts("neuron")
    head_masks = [torch.ones(h, requires_grad=True) for h in head_counts]
    neuron_masks = [torch.ones(n, requires_grad=True) for n in neuron_counts]
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)  # gradients w.r.t. the masks only
    head_grads, neuron_grads = [], []
    try:
        for i in range(len(labels)):
            with torch.enable_grad():
                _, _, logits = adapter.masked_forward(sample(batch, i), head_masks, neuron_masks)
                grads = torch.autograd.grad(task_loss(logits, labels[i : i + 1]), head_masks + neuron_masks,
                                            allow_unused=True)
            grads = [torch.zeros_like(m) if g is None else g for g, m in zip(grads, head_masks + neuron_masks, strict=True)]
            head_grads.append(torch.cat(grads[: len(head_masks)]))
            neuron_grads.append(torch.cat(grads[len(head_masks) :]))
    finally:
        for p in params:
            p.requires_grad_(True)
    return torch.stack(head_grads), torch.stack(neuron_grads)


def fisher_scores(adapter, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> pd.DataFrame:
    """Scores table (layer, kind, index, fisher, importance) for the shared search."""
    head_grads, neuron_grads = mask_gradients(adapter, batch, labels)
    rows = []
    for kind, grads, counts in (("head", head_grads, adapter.unit_counts("head")),
                                ("neuron", neuron_grads, adapter.unit_counts("neuron"))):
        fisher = grads.double().pow(2).sum(0)
        start = 0
        for layer, count in enumerate(counts):
            for index in range(count):
                value = float(fisher[start + index])
                rows.append({"layer": layer, "kind": kind, "index": index, "fisher": value, "importance": value})
            start += count
    return pd.DataFrame(rows, columns=["layer", "kind", "index", "fisher", "importance"])
