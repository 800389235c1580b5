"""Budgeted head/neuron search (optin-method.md §5, the structure of Kwon et al.'s `search_mac`).

Heads and neurons are ranked globally by importance; for every head count k the remaining MACs buy
the top m neurons (unit costs may differ per layer, as in Swin's stages), and the (k, m) with the largest summed importance wins. k = 0 is tried only when
not even one head fits (the authors start at 1); a k whose heads alone exceed the budget is never
taken (the guard the authors' code lacks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from optin.engine import flops
from optin.engine.flops import network_macs
from optin.engine.masks import Kept


def ranked(scores: pd.DataFrame, kind: str, by: str = "importance") -> pd.DataFrame:
    """Units of ``kind`` by ``by``, descending; ties broken by (layer, index) for determinism."""
    part = scores[scores["kind"] == kind].sort_values(["layer", "index"], kind="stable")
    order = np.argsort(-part[by].to_numpy(dtype=np.float64), kind="stable")
    return part.iloc[order].reset_index(drop=True)


def ranked_heads_and_neurons(scores: pd.DataFrame, heads_per_layer: list[int],
                             neurons_per_layer: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Heads and neurons ranked (``ranked``), after checking that the scores cover the model."""
    heads, neurons = ranked(scores, "head"), ranked(scores, "neuron")
    if len(heads) != sum(heads_per_layer) or len(neurons) != sum(neurons_per_layer):
        raise ValueError(
            f"scores hold {len(heads)} heads / {len(neurons)} neurons; the model has "
            f"{sum(heads_per_layer)} / {sum(neurons_per_layer)}"
        )
    return heads, neurons


def _cumulative_costs(units: pd.DataFrame, cost: float | Sequence[float]) -> np.ndarray:
    """Cost of the top-k units for k = 0..n; ``cost`` is one value or one per layer (Swin stages)."""
    if isinstance(cost, (int, float)):
        return np.arange(len(units) + 1) * float(cost)
    per_unit = np.asarray(cost, dtype=np.float64)[units["layer"].to_numpy()]
    return np.concatenate([[0.0], np.cumsum(per_unit)])


def cost_weighted(scores: pd.DataFrame, head_cost: float | Sequence[float], neuron_cost: float | Sequence[float]) -> pd.DataFrame:
    """Scores with ``importance`` multiplied by each unit's MACs. For baselines whose scores carry no
    scale shared by heads and neurons (weight magnitude, random): search_mac maximises summed
    importance, and a head costs ~66 MiniLM neurons, so unit-scale scores would buy neurons and drop
    nearly every head. Weighted, the search is indifferent between a head and its MACs in neurons
    (in expectation for random scores), and within a kind and layer the ranking is unchanged."""
    out = scores.copy()
    for kind, cost in (("head", head_cost), ("neuron", neuron_cost)):
        rows = out["kind"] == kind
        per_unit = cost if isinstance(cost, (int, float)) else np.asarray(cost, dtype=np.float64)[out.loc[rows, "layer"].to_numpy()]
        out.loc[rows, "importance"] = out.loc[rows, "importance"].to_numpy(dtype=np.float64) * per_unit
    return out


def search_mac(
    scores: pd.DataFrame,
    *,
    budget: float,
    head_cost: float | Sequence[float],
    neuron_cost: float | Sequence[float],
    base_macs: float,
    heads_per_layer: list[int],
    neurons_per_layer: list[int],
    kv_heads: tuple[float, int] | None = None,
) -> tuple[Kept, dict]:
    """``kv_heads`` = (cost of one KV head, query heads per KV head): grouped-query attention, where
    a KV head is paid once while any of its query heads is kept (``gqa_head_costs``)."""
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget (fraction of MACs kept) must be in (0, 1], got {budget}")
    heads, neurons = ranked_heads_and_neurons(scores, heads_per_layer, neurons_per_layer)
    capacity = budget * base_macs
    head_total = _cumulative_costs(heads, head_cost) if kv_heads is None else gqa_head_costs(heads, head_cost, *kv_heads)
    neuron_total = _cumulative_costs(neurons, neuron_cost)
    uniform = float(neuron_cost) if isinstance(neuron_cost, (int, float)) else None
    k, m, importance = _best_prefixes(heads, neurons, head_total, neuron_total, capacity, uniform)
    kept = _kept_prefixes(heads, neurons, k, m, len(heads_per_layer))
    achieved = float(head_total[k] + neuron_total[m])
    info = {
        "budget": budget,
        "base_macs": base_macs,
        "target_macs": capacity,
        "achieved_macs": achieved,
        "achieved_ratio": achieved / base_macs,
        "heads_kept": k,
        "neurons_kept": m,
        "importance_kept": importance,
    }
    return kept, info


def _best_prefixes(heads: pd.DataFrame, neurons: pd.DataFrame, head_total: np.ndarray, neuron_total: np.ndarray,
                   capacity: float, uniform_neuron_cost: float | None = None) -> tuple[int, int, float]:
    """The (k, m) whose top-k heads and top-m neurons fit ``capacity`` with the largest summed
    importance; ``*_total[i]`` is the cost of the top i units (non-decreasing). Neurons of one
    ``uniform_neuron_cost`` are counted by division, as the MAC search always has."""
    head_prefix = np.concatenate([[0.0], np.cumsum(heads["importance"].to_numpy(dtype=np.float64))])
    neuron_prefix = np.concatenate([[0.0], np.cumsum(neurons["importance"].to_numpy(dtype=np.float64))])
    first = 0 if len(heads) == 0 or capacity < head_total[1] else 1
    best = (-math.inf, 0, 0)
    for k in range(first, len(heads) + 1):
        if head_total[k] > capacity:
            break
        left = capacity - head_total[k]
        if uniform_neuron_cost is not None:
            m = min(int(math.floor(left / uniform_neuron_cost)), len(neurons))
        else:
            m = int(np.searchsorted(neuron_total, left, side="right")) - 1
        total = head_prefix[k] + neuron_prefix[m]
        if total > best[0]:
            best = (total, k, m)
    return best[1], best[2], float(best[0])


def _kept_prefixes(heads: pd.DataFrame, neurons: pd.DataFrame, k: int, m: int, num_layers: int) -> Kept:
    return Kept.of(
        head=[sorted(heads["index"][:k][heads["layer"][:k] == layer].tolist()) for layer in range(num_layers)],
        neuron=[sorted(neurons["index"][:m][neurons["layer"][:m] == layer].tolist()) for layer in range(num_layers)],
    )


def _layer_step_costs(units: pd.DataFrame, steps: np.ndarray) -> np.ndarray:
    """Cost of the top-i units for i = 0..n when the j-th unit kept in a layer costs ``steps[j - 1]``."""
    taken: dict[int, int] = {}
    costs = []
    for layer in units["layer"].tolist():
        costs.append(steps[taken.get(layer, 0)])
        taken[layer] = taken.get(layer, 0) + 1
    return np.concatenate([[0.0], np.cumsum(costs)])


def search_latency(scores: pd.DataFrame, *, budget: float, table, heads_per_layer: list[int],
                   neurons_per_layer: list[int]) -> tuple[Kept, dict]:
    """Kwon et al.'s latency search (``--metric latency`` with their MHA/FFN lookup tables), on
    search_mac's structure: the top-k heads and top-m neurons of the global rankings, now priced by
    ``table`` (optin.engine.latency_table.LatencyTable): the j-th head kept in a layer costs attention(j) -
    attention(j - 1), and so for neurons. Keeps the most important (k, m) whose predicted latency
    is at most ``budget`` x the dense model's."""
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget (fraction of the dense latency) must be in (0, 1], got {budget}")
    heads, neurons = ranked_heads_and_neurons(scores, heads_per_layer, neurons_per_layer)
    if set(heads_per_layer) != {table.heads} or set(neurons_per_layer) != {table.neurons}:
        raise ValueError(f"the latency table is for {table.heads} heads and {table.neurons} neurons per layer; "
                         f"the scores have {sorted(set(heads_per_layer))} and {sorted(set(neurons_per_layer))}")
    target = budget * table.dense_s
    # The step costs' running sums round differently from the table's own sums: a float tolerance,
    # so that budget 1 keeps the dense model.
    capacity = target - table.rest_s + 1e-12 * table.dense_s
    if capacity < 0:
        raise ValueError(f"budget {budget}: {target * 1e3:.3g} ms is below the table's fixed rest "
                         f"({table.rest_s * 1e3:.3g} ms of {table.dense_s * 1e3:.3g} ms): no mask meets it")
    head_total = _layer_step_costs(heads, table.step_costs("head", table.heads))
    neuron_total = _layer_step_costs(neurons, table.step_costs("neuron", table.neurons))
    k, m, importance = _best_prefixes(heads, neurons, head_total, neuron_total, capacity)
    kept = _kept_prefixes(heads, neurons, k, m, len(heads_per_layer))
    predicted = table.predict(kept.counts("head"), kept.counts("neuron"))
    info = {"budget": budget, "budget_metric": "latency", "dense_latency_s": table.dense_s, "target_latency_s": target,
            "predicted_latency_s": predicted, "predicted_latency_ratio": predicted / table.dense_s,
            "heads_kept": k, "neurons_kept": m, "importance_kept": importance}
    return kept, info


def gqa_head_costs(heads: pd.DataFrame, head_cost: float, kv_cost: float, group_size: int) -> np.ndarray:
    """Cost of the top-k query heads for k = 0..n: each head's own cost, plus a KV head's the first
    time one of its query heads is taken."""
    seen: set[tuple[int, int]] = set()
    steps = []
    for layer, index in zip(heads["layer"].tolist(), heads["index"].tolist(), strict=True):
        group = (layer, index // group_size)
        steps.append(head_cost + (0.0 if group in seen else kv_cost))
        seen.add(group)
    return np.concatenate([[0.0], np.cumsum(steps)])


def search_threshold(
    scores: pd.DataFrame, *, budget: float, head_cost: float, kv_cost: float, group_size: int, neuron_cost: float,
    base_macs: float, heads_per_layer: list[int], neurons_per_layer: list[int], by: str = "importance",
) -> tuple[Kept, dict]:
    """FLAP's own structure (AL-AM): every head and channel group in one ranking by ``by``, kept from
    the top while the MACs stay within the budget (FLAP thresholds its ranking where the cumulative
    compression weight is nearest the target, which may overshoot it; here the budget holds)."""
    units = scores[scores["kind"].isin(["head", "neuron"])].sort_values(["kind", "layer", "index"], kind="stable")
    order = np.argsort(-units[by].to_numpy(dtype=np.float64), kind="stable")
    units = units.iloc[order].reset_index(drop=True)
    capacity, spent, seen = budget * base_macs, 0.0, set()
    kept = {"head": [[] for _ in heads_per_layer], "neuron": [[] for _ in neurons_per_layer]}
    for kind, layer, index in zip(units["kind"], units["layer"], units["index"], strict=True):
        if kind == "head":
            group = (layer, index // group_size)
            cost = head_cost + (0.0 if group in seen else kv_cost)
        else:
            cost = neuron_cost
        if spent + cost > capacity:
            break
        spent += cost
        if kind == "head":
            seen.add(group)
        kept[kind][layer].append(int(index))
    selection = Kept.of(head=[sorted(k) for k in kept["head"]], neuron=[sorted(k) for k in kept["neuron"]])
    return selection, {"budget": budget, "base_macs": base_macs, "target_macs": capacity, "achieved_macs": spent,
                       "achieved_ratio": spent / base_macs, "heads_kept": sum(selection.counts("head")),
                       "neurons_kept": sum(selection.counts("neuron"))}


def search_tau(
    scores: pd.DataFrame,
    *,
    budget: float,
    head_neuron_share: float,
    seq_len: float,
    hidden: int,
    head_dim: int,
    heads_per_layer: list[int],
    neurons_per_layer: list[int],
    max_removed: int,
    uniform: bool = False,
) -> tuple[Kept, list[int], dict]:
    """OPTIN-tau (optin-method.md §5): heads and neurons take ``head_neuron_share`` of the MAC
    reduction; the rest comes from tokens, removing the least important (layer, token) entries
    (never in layer 0) with token counts kept non-increasing over depth, until the budget holds.

    At most ``max_removed`` tokens leave any layer (token merging keeps at least one patch token).
    ``uniform``: ToMe's schedule instead, the same r tokens merged in every layer after the first,
    with the smallest r that meets the budget (the token scores are not read).
    Returns the kept heads/neurons, tokens removed before each layer (cumulative, non-decreasing)
    and the search record.
    """
    num_layers = len(heads_per_layer)
    base = flops.encoder_macs(heads_per_layer, neurons_per_layer, seq_len, hidden, head_dim)
    hn_budget = 1.0 - head_neuron_share * (1.0 - budget)
    kept, hn_info = search_mac(
        scores, budget=hn_budget, head_cost=flops.head_macs(seq_len, hidden, head_dim),
        neuron_cost=flops.neuron_macs(seq_len, hidden), base_macs=base,
        heads_per_layer=heads_per_layer, neurons_per_layer=neurons_per_layer,
    )
    tokens = ranked(scores, "token")
    tokens = tokens[tokens["layer"] > 0].iloc[::-1]  # least important first
    capacity = budget * base
    removed = [0] * num_layers

    def schedule() -> list[int]:
        # A token gone from layer l is gone from every later layer: cumulative maximum.
        return [int(r) for r in np.maximum.accumulate(removed)]

    def macs() -> float:
        return flops.encoder_macs(kept.counts("head"), kept.counts("neuron"), [seq_len - r for r in schedule()], hidden, head_dim)

    if uniform:
        per_layer = 0
        while macs() > capacity and per_layer < max_removed:
            per_layer += 1
            removed = [min(per_layer * layer, max_removed) for layer in range(num_layers)]
    else:
        for layer in tokens["layer"]:
            if macs() <= capacity:
                break
            if max(removed[: layer + 1]) < max_removed:
                removed[layer] += 1
    achieved = macs()
    if achieved > capacity * (1 + 1e-9):
        raise ValueError(f"budget {budget}: merging all but one patch token still leaves {achieved / base:.3f} of the MACs")
    cumulative = schedule()
    info = {
        "budget": budget, "base_macs": base, "target_macs": capacity, "achieved_macs": achieved,
        "achieved_ratio": achieved / base, "heads_kept": hn_info["heads_kept"], "neurons_kept": hn_info["neurons_kept"],
        "importance_kept": hn_info["importance_kept"], "head_neuron_share": head_neuron_share,
        "head_neuron_budget": hn_budget, "token_schedule": "uniform" if uniform else "importance",
        "tokens_removed_per_layer": cumulative,
        "tokens_per_layer": [seq_len - r for r in cumulative],
    }
    return kept, cumulative, info


def search_channels(
    scores: pd.DataFrame,
    *,
    budget: float,
    ops: Sequence,
    channels_per_layer: list[int],
    min_per_layer: list[int],
    ranking: str = "per_mac",
) -> tuple[Kept, dict]:
    """CNN channels (one unit kind): keep the longest prefix of the global ranking whose network MACs
    fit the budget, after each layer's ``min_per_layer`` best channels (a chain network needs one per
    layer). MACs are recounted exactly after every addition, since a VGG conv's cost is the product
    of the kept channels on its two sides.

    ``ranking``: ``importance`` ranks by importance alone; ``per_mac`` by importance per MAC a channel
    of its layer costs in the unpruned network (the knapsack ratio). Heads and neurons get the same
    cost awareness from search_mac's enumeration of (heads, neurons) pairs; channels of different
    layers differ in cost by up to 40x (ccexam's MNISTNet: conv1 120k, fc 3k MACs each)."""

    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget (fraction of MACs kept) must be in (0, 1], got {budget}")
    if ranking not in ("per_mac", "importance"):
        raise ValueError(f"channel ranking must be 'per_mac' or 'importance', got {ranking!r}")
    base = network_macs(ops, channels_per_layer)
    unit_cost = []
    for layer in range(len(channels_per_layer)):
        fewer = list(channels_per_layer)
        fewer[layer] -= 1
        unit_cost.append(base - network_macs(ops, fewer))
    per_mac = scores["importance"] / scores["layer"].map(dict(enumerate(unit_cost)))
    channels = ranked(scores.assign(per_mac=per_mac), "channel", by="per_mac" if ranking == "per_mac" else "importance")
    if len(channels) != sum(channels_per_layer):
        raise ValueError(f"scores hold {len(channels)} channels; the model has {sum(channels_per_layer)}")
    capacity = budget * base
    counts = [0] * len(channels_per_layer)
    kept: list[list[int]] = [[] for _ in channels_per_layer]
    forced = np.zeros(len(channels), dtype=bool)
    for position, (layer, index) in enumerate(zip(channels["layer"], channels["index"], strict=True)):
        if counts[layer] < min_per_layer[layer]:
            counts[layer] += 1
            kept[layer].append(int(index))
            forced[position] = True
    if network_macs(ops, counts) > capacity:
        raise ValueError(f"budget {budget}: keeping {min_per_layer} channels per layer already costs "
                         f"{network_macs(ops, counts) / base:.3f} of the MACs")
    importance = channels["importance"].to_numpy(dtype=np.float64)
    importance_kept = float(importance[forced].sum())
    for position in np.nonzero(~forced)[0]:
        layer = int(channels["layer"].iloc[position])
        counts[layer] += 1
        if network_macs(ops, counts) > capacity:
            counts[layer] -= 1
            break
        kept[layer].append(int(channels["index"].iloc[position]))
        importance_kept += importance[position]
    achieved = network_macs(ops, counts)
    info = {
        "budget": budget, "base_macs": base, "target_macs": capacity, "achieved_macs": achieved,
        "achieved_ratio": achieved / base, "channels_kept": sum(counts), "channels_per_layer_kept": counts,
        "importance_kept": importance_kept, "ranking": ranking, "unit_macs_per_layer": unit_cost,
    }
    return Kept.of(channel=[sorted(k) for k in kept]), info


def relative_to_layer_mean(scores: pd.DataFrame) -> pd.DataFrame:
    """Each unit's importance divided by the mean of its kind in its layer (scores with no scale
    shared across layers, as weight magnitude in optin.methods.baselines)."""
    out = scores.copy()
    means = out.groupby(["kind", "layer"])["importance"].transform("mean")
    out["importance"] = out["importance"] / means.where(means > 0, 1.0)
    return out


def removed_channel_means(scores: pd.DataFrame, kept, head_dim: int, channel_group: int) -> dict:
    """Per layer, the (input channel, calibration mean) of every o_proj / down_proj input channel a
    selection removes: what FLAP's bias compensation adds back as an output bias (``output_biases``)."""
    out = {"o": [], "down": []}
    for kind, name, width in (("head", "o", head_dim), ("neuron", "down", channel_group)):
        for layer, kept_units in enumerate(kept[kind]):
            part = scores[(scores["kind"] == kind) & (scores["layer"] == layer) & ~scores["index"].isin(kept_units)]
            out[name].append([[int(u) * width + c, float(m)] for u, values in zip(part["index"], part["channel_means"], strict=True)
                              for c, m in enumerate(values)])
    return out
