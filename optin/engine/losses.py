"""Losses that measure how far a masked model drifts from the unpruned one.

Manifold distillation (Hao et al. 2022): L2-normalise each token vector, flatten B x T x D to rows,
take K rows, and compare the K x K Gram matrices: L_MD = ||G_t - G_s||_F^2.

The fast forms below never build G_t - G_s from two large, nearly equal Gram matrices (that loses
every digit when a unit barely matters). With E = F_s - F_t they use
    G_s - G_t = E F_t^T + F_t E^T + E E^T                       (K x K form, cost 2 K^2 D)
    ||G_s - G_t||^2 = 2<A,Y> + 2<X,X^T> + 4<X,Y> + ||Y||^2      (D x D form, cost 2 K D^2)
with A = F_t^T F_t, X = F_t^T E, Y = E^T E; every term is of the order of |E|^2.
"""

from __future__ import annotations

import torch


def manifold_distance_direct(teacher_rows: torch.Tensor, student_rows: torch.Tensor) -> torch.Tensor:
    """Oracle: ||F_t F_t^T - F_s F_s^T||_F^2 in float64, straight from the definition."""
    ft = teacher_rows.double()
    fs = student_rows.double()
    gram_t = ft @ ft.transpose(-1, -2)
    gram_s = fs @ fs.transpose(-1, -2)
    return ((gram_t - gram_s) ** 2).sum(dim=(-1, -2))


def teacher_gram_dd(teacher_rows: torch.Tensor) -> torch.Tensor:
    """A = F_t^T F_t, computed once per tap and reused for every variant."""
    return teacher_rows.transpose(-1, -2) @ teacher_rows


def manifold_distance(
    teacher_rows: torch.Tensor,
    student_rows: torch.Tensor,
    teacher_dd: torch.Tensor | None = None,
) -> torch.Tensor:
    """||G_t - G_s||_F^2 per variant.

    teacher_rows: [K, D] (shared rows) or [V, K, D] (a row subset per variant);
    student_rows: [V, K, D]. Returns float64 [V].
    """
    k, d = student_rows.shape[-2:]
    diff = student_rows - teacher_rows
    if k <= d:
        cross = diff @ teacher_rows.transpose(-1, -2)
        delta = cross + cross.transpose(-1, -2) + diff @ diff.transpose(-1, -2)
        return (delta.double() ** 2).sum(dim=(-1, -2))
    if teacher_dd is None or teacher_rows.dim() == 3:
        teacher_dd = teacher_gram_dd(teacher_rows)
    x = teacher_rows.transpose(-1, -2) @ diff
    y = diff.transpose(-1, -2) @ diff
    # 2<A,Y> + 4<X,Y> + ||Y||^2 = <Y, 2A + 4X + Y>; float32 products, float64 sums.
    weights = torch.add(y, x, alpha=4.0).add_(teacher_dd, alpha=2.0)
    total = (y * weights).sum(dim=(-1, -2), dtype=torch.float64)
    total += 2.0 * (x * x.transpose(-1, -2)).sum(dim=(-1, -2), dtype=torch.float64)
    return total.clamp_min(0.0)


def kl_divergence(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    *,
    temperature: float,
    divide_logits: bool,
    reduction: str,
    dtype: torch.dtype,
    clamp: bool,
) -> torch.Tensor:
    """T^2 * KL(p_t || p_s) per variant.

    teacher_logits [B, C]; student_logits [V, B, C]. ``divide_logits`` softens with logits / T
    (standard KD, the paper's text); the authors' code does not divide and sums over the batch.
    A single-output regressor (STS-B) has no distribution (its KL would be 0 for every unit): its
    logit term is the squared error of the outputs instead, with the same reduction.
    """
    zt = teacher_logits.to(dtype)
    zs = student_logits.to(dtype)
    if zt.shape[-1] == 1:
        per_example = ((zs - zt) ** 2).squeeze(-1)
        return (per_example.sum(dim=-1) if reduction == "sum" else per_example.mean(dim=-1)).double()
    if divide_logits:
        zt = zt / temperature
        zs = zs / temperature
    log_pt = torch.log_softmax(zt, dim=-1)
    log_ps = torch.log_softmax(zs, dim=-1)
    per_example = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)
    if reduction == "sum":
        value = per_example.sum(dim=-1)
    elif reduction == "batchmean":
        value = per_example.mean(dim=-1)
    else:
        raise ValueError(f"kl reduction must be 'sum' or 'batchmean', got {reduction!r}")
    value = value * temperature**2
    if clamp:
        value = value.clamp_min(0.0)
    return value.double()
