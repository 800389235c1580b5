"""Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers": the closest peer.

A head's or FFN neuron's importance is the diagonal of the empirical Fisher information of its mask
variable under the task loss, with every mask at 1:

    I(u) = sum_i (dL(x_i, y_i) / dm_u)^2      over the labelled calibration samples i.

Gradients are per sample (one backward each) by default, as the Fisher's definition asks; a batch
gradient squared adds cross terms between samples. Their released code (``prune/fisher.py``) squares
the gradient of each mini-batch's *mean* loss (batches of 32): ``fisher_batch_size`` selects that
(1 = per sample, 32 = their code); the mask rearrangement's Fisher blocks use the same gradients. The search (``optin.engine.search.search_mac``), slimming and
evaluation are OPTIN's, so the two methods differ only in their scores.

``fisher_scores`` is their "mask search" stage. Their two later stages, for the ``kwon_tuned``
method, act on a searched mask per budget:

- ``rearrange``: inside each layer, with the number of kept units fixed, swap kept and pruned units
  greedily while the second-order loss estimate (1 - m)^T F_l (1 - m) decreases, F_l the layer's
  block of the empirical Fisher (off-diagonals included);
- ``tune_scales``: layer by layer, least-squares mask values for the kept units so that the pruned
  layer's residual sums (before LayerNorm) match the unpruned model's on the calibration batch, the
  pruned model's own input flowing in (ridge-regularised toward 1, as their damped LSMR). The scales
  fold into the output-projection / down-projection columns (``optin.arch.base.apply_unit_scales``), so the slim
  model stays a plain smaller model.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from optin.engine.masks import Kept
from optin.methods.registry import check_fisher_batch_size


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classifiers; mean squared error for a single-output regressor (STS-B)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


def rows(batch: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {key: value[start:stop] for key, value in batch.items()}


def mask_gradients(adapter, batch: dict[str, torch.Tensor], labels: torch.Tensor,
                   fisher_batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the task loss w.r.t. every head and neuron mask, all masks at 1, one per
    mini-batch of ``fisher_batch_size`` samples (its mean loss; 1 = per sample):
    ([batches, total heads], [batches, total neurons]), layer-major."""
    check_fisher_batch_size(fisher_batch_size)
    head_counts, neuron_counts = adapter.unit_counts("head"), adapter.unit_counts("neuron")
    head_masks = [torch.ones(h, requires_grad=True, device=adapter.device) for h in head_counts]
    neuron_masks = [torch.ones(n, requires_grad=True, device=adapter.device) for n in neuron_counts]
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)  # gradients w.r.t. the masks only
    head_grads, neuron_grads = [], []
    try:
        for start in range(0, len(labels), fisher_batch_size):
            stop = start + fisher_batch_size
            with torch.enable_grad():
                _, _, logits = adapter.masked_forward(rows(batch, start, stop), head_masks, neuron_masks)
                grads = torch.autograd.grad(task_loss(logits, labels[start:stop]), head_masks + neuron_masks,
                                            allow_unused=True)
            grads = [torch.zeros_like(m) if g is None else g for g, m in zip(grads, head_masks + neuron_masks, strict=True)]
            head_grads.append(torch.cat(grads[: len(head_masks)]))
            neuron_grads.append(torch.cat(grads[len(head_masks) :]))
    finally:
        for p in params:
            p.requires_grad_(True)
    return torch.stack(head_grads), torch.stack(neuron_grads)


def fisher_scores(adapter, batch: dict[str, torch.Tensor], labels: torch.Tensor, fisher_batch_size: int = 1) -> pd.DataFrame:
    """Scores table (layer, kind, index, fisher, importance) for the shared search."""
    head_grads, neuron_grads = mask_gradients(adapter, batch, labels, fisher_batch_size)
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


def _split_by_layer(grads: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
    return list(torch.split(grads, counts, dim=1))


def rearrange_layer(grads: torch.Tensor, kept: list[int], max_swaps: int = 10_000) -> list[int]:
    """Kwon et al.'s mask rearrangement for one layer and unit kind: ``grads`` [N, U] per-sample mask
    gradients; returns as many kept indices as given, chosen by greedy pair swaps that decrease
    sum_{a, b pruned} F_ab, F = grads^T grads."""
    units = grads.shape[1]
    if not kept or len(kept) == units:
        return sorted(kept)
    fisher = grads.double().T @ grads.double()
    keep = torch.zeros(units, dtype=torch.bool, device=grads.device)
    keep[list(kept)] = True
    diag = torch.diagonal(fisher)
    for _ in range(max_swaps):
        pruned_rows = fisher[:, ~keep].sum(1)  # s_u = sum over pruned b of F_ub
        inside, outside = torch.nonzero(keep).squeeze(1), torch.nonzero(~keep).squeeze(1)
        # Moving i (kept) into the pruned set and j out of it changes the objective by
        # 2 s_i + F_ii - 2 s_j + F_jj - 2 F_ij.
        delta = ((2 * pruned_rows[inside] + diag[inside])[:, None] + (diag[outside] - 2 * pruned_rows[outside])[None, :]
                 - 2 * fisher[inside][:, outside])
        best = int(torch.argmin(delta))
        if float(delta.view(-1)[best]) >= -1e-12 * float(diag.sum()):
            break
        i, j = inside[best // len(outside)], outside[best % len(outside)]
        keep[i], keep[j] = False, True
    return torch.nonzero(keep).squeeze(1).tolist()


def rearrange(adapter, batch, labels, kept: Kept, fisher_batch_size: int = 1) -> Kept:
    head_grads, neuron_grads = mask_gradients(adapter, batch, labels, fisher_batch_size)
    heads = _split_by_layer(head_grads, adapter.unit_counts("head"))
    neurons = _split_by_layer(neuron_grads, adapter.unit_counts("neuron"))
    return Kept.of(head=[rearrange_layer(g, list(k)) for g, k in zip(heads, kept["head"], strict=True)],
                   neuron=[rearrange_layer(g, list(k)) for g, k in zip(neurons, kept["neuron"], strict=True)])


def _ridge(gram: torch.Tensor, rhs: torch.Tensor, damping: float) -> torch.Tensor:
    """argmin ||A m - b||^2 + lam ||m - 1||^2 from the normal equations (gram = A^T A, rhs = A^T b)."""
    if len(rhs) == 0:
        return rhs
    lam = damping * float(torch.diagonal(gram).mean()) + 1e-12
    eye = torch.eye(len(rhs), dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + lam * eye, rhs + lam)


@torch.no_grad()
def tune_scales(adapter, teacher, kept: Kept, damping: float = 1e-3, bound: float = 10.0) -> tuple[list[list[float]], list[list[float]]]:
    """Per layer, the least-squares scales of the kept heads and neurons (see the module docstring);
    ``teacher`` is the unpruned run on the calibration batch (optin.engine.scoring.Teacher, real tokens only)."""
    x, layout = adapter.embed(teacher.batch, teacher.rows)
    x = x.double()
    model_dtype = next(adapter.model.parameters()).dtype
    adapter.model.double()
    adapter.weights_changed()
    head_scales, neuron_scales = [], []
    try:
        for layer in range(adapter.num_layers):
            x_t = teacher.layer_inputs[layer].double()
            heads, neurons = list(kept["head"][layer]), list(kept["neuron"][layer])
            # Attention: resid = x + bias + sum_h m_h c_h, target = the unpruned layer's resid.
            target_resid, _ = adapter.attention(layer, x_t, layout)
            full, per_head = adapter.attention(layer, x, layout, per_head=True)
            if per_head is None:  # a layer that already has no attention
                a = adapter.after_attention(layer, full)
                head_scales.append([])
            else:
                base = full - per_head.sum(0)
                cols = per_head[heads].reshape(len(heads), -1)  # [k, R*D]
                scales = _ridge(cols @ cols.T, cols @ (target_resid - base).reshape(-1), damping).clamp(-bound, bound)
                head_scales.append(scales.tolist())
                a = adapter.after_attention(layer, base + torch.einsum("k,krd->rd", scales, per_head[heads]))
            # FFN: pre-LayerNorm sum a + sum_j m_j act_j w_j (+ bias), target the unpruned one.
            a_t = adapter.after_attention(layer, target_resid)
            ffn_t, _ = adapter.ffn(layer, a_t)
            _, act = adapter.ffn(layer, a)
            if act.shape[-1] == 0:
                neuron_scales.append([])
                x = adapter.after_ffn(layer, a, torch.zeros_like(a))
                continue
            directions = adapter.neuron_directions(layer).double()[neurons]  # [k, D]
            act = act[:, neurons]
            gram = (act.T @ act) * (directions @ directions.T)
            rhs = (act * ((a_t + ffn_t - a) @ directions.T)).sum(0)
            scales = _ridge(gram, rhs, damping).clamp(-bound, bound)
            neuron_scales.append(scales.tolist())
            x = adapter.after_ffn(layer, a, (act * scales) @ directions)
    finally:
        adapter.model.to(model_dtype)
        adapter.weights_changed()
    return head_scales, neuron_scales




def score(adapter, calibration, settings: dict, seed: int) -> pd.DataFrame:
    """The registry's scorer: the Fisher of every head and neuron mask on the labelled batch."""
    return fisher_scores(adapter, calibration.batch, calibration.labels, settings["fisher_batch_size"])


def mask_stages(adapter, teacher, labels, kept: Kept, settings: dict) -> tuple[Kept, dict]:
    """Their stages after the search, on one searched mask: the rearranged mask, and the fields the
    mask file gains (the tuned unit scales, which stages ran)."""
    extra = {}
    if settings["rearrange"]:
        rearranged = rearrange(adapter, teacher.batch, labels, kept, settings["fisher_batch_size"])
        moved = sum(len(set(a) - set(b)) for a, b in zip(rearranged["head"] + rearranged["neuron"],
                                                           kept["head"] + kept["neuron"], strict=True))
        print(f"rearrangement moved {moved} units (counts per layer unchanged)")
        kept = rearranged
    if settings["tune"]:
        heads, neurons = tune_scales(adapter, teacher, kept)
        extra["unit_scales"] = {"head": heads, "neuron": neurons}
        flat = [v for layer in heads + neurons for v in layer]
        print(f"mask tuning: {len(flat)} scales in [{min(flat, default=1):.3f}, {max(flat, default=1):.3f}]")
    extra["kwon_stages"] = {"rearrange": settings["rearrange"], "tune": settings["tune"]}
    return kept, extra
