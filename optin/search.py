"""Budgeted head/neuron search (optin-method.md §5, the structure of Kwon et al.'s `search_mac`).

Heads and neurons are ranked globally by importance; for every head count k the remaining MACs buy
the top m neurons, and the (k, m) with the largest summed importance wins. k = 0 is tried only when
not even one head fits (the authors start at 1); a k whose heads alone exceed the budget is never
taken (the guard the authors' code lacks).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from optin.arch.base import Kept


def ranked(scores: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Units of ``kind`` by importance, descending; ties broken by (layer, index) for determinism."""
    part = scores[scores["kind"] == kind].sort_values(["layer", "index"], kind="stable")
    order = np.argsort(-part["importance"].to_numpy(dtype=np.float64), kind="stable")
    return part.iloc[order].reset_index(drop=True)


def search_mac(
    scores: pd.DataFrame,
    *,
    budget: float,
    head_cost: float,
    neuron_cost: float,
    base_macs: float,
    heads_per_layer: list[int],
    neurons_per_layer: list[int],
) -> tuple[Kept, dict]:
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget (fraction of MACs kept) must be in (0, 1], got {budget}")
    heads, neurons = ranked(scores, "head"), ranked(scores, "neuron")
    if len(heads) != sum(heads_per_layer) or len(neurons) != sum(neurons_per_layer):
        raise ValueError(
            f"scores hold {len(heads)} heads / {len(neurons)} neurons; the model has "
            f"{sum(heads_per_layer)} / {sum(neurons_per_layer)}"
        )
    capacity = budget * base_macs
    head_prefix = np.concatenate([[0.0], np.cumsum(heads["importance"].to_numpy(dtype=np.float64))])
    neuron_prefix = np.concatenate([[0.0], np.cumsum(neurons["importance"].to_numpy(dtype=np.float64))])
    first = 0 if capacity < head_cost else 1
    best = (-math.inf, 0, 0)
    for k in range(first, len(heads) + 1):
        if k * head_cost > capacity:
            break
        m = min(int(math.floor((capacity - k * head_cost) / neuron_cost)), len(neurons))
        total = head_prefix[k] + neuron_prefix[m]
        if total > best[0]:
            best = (total, k, m)
    _, k, m = best
    kept_heads = [sorted(heads["index"][:k][heads["layer"][:k] == layer].tolist()) for layer in range(len(heads_per_layer))]
    kept_neurons = [
        sorted(neurons["index"][:m][neurons["layer"][:m] == layer].tolist()) for layer in range(len(neurons_per_layer))
    ]
    kept = Kept(heads=tuple(map(tuple, kept_heads)), neurons=tuple(map(tuple, kept_neurons)))
    achieved = k * head_cost + m * neuron_cost
    info = {
        "budget": budget,
        "base_macs": base_macs,
        "target_macs": capacity,
        "achieved_macs": achieved,
        "achieved_ratio": achieved / base_macs,
        "heads_kept": k,
        "neurons_kept": m,
        "importance_kept": float(best[0]),
    }
    return kept, info
