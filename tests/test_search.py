import itertools
import json

import numpy as np
import pandas as pd
import pytest

from optin.engine.masks import Kept
from optin.engine.search import search_mac


def scores(seed, layers=2, heads=3, neurons=5):
    rng = np.random.default_rng(seed)
    rows = [{"layer": l, "kind": "head", "index": h, "importance": rng.exponential()} for l in range(layers) for h in range(heads)]
    rows += [{"layer": l, "kind": "neuron", "index": j, "importance": rng.exponential()} for l in range(layers) for j in range(neurons)]
    return pd.DataFrame(rows)


def brute_force(table, capacity, head_cost, neuron_cost, allow_zero_heads):
    """Best subset by exhaustive enumeration: any heads, then the best neurons that fit."""
    heads = table[table.kind == "head"].reset_index(drop=True)
    neurons = table[table.kind == "neuron"].sort_values("importance", ascending=False)
    best = -np.inf
    for k in range(0 if allow_zero_heads else 1, len(heads) + 1):
        for subset in itertools.combinations(range(len(heads)), k):
            if k * head_cost > capacity:
                continue
            m = min(int((capacity - k * head_cost) // neuron_cost), len(neurons))
            best = max(best, heads.importance[list(subset)].sum() + neurons.importance[:m].sum())
    return best


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("budget", [0.3, 0.55, 0.8, 1.0])
def test_search_matches_exhaustive_oracle(seed, budget):
    table = scores(seed)
    head_cost, neuron_cost = 10.0, 3.0
    base = 6 * head_cost + 10 * neuron_cost
    kept, info = search_mac(table, budget=budget, head_cost=head_cost, neuron_cost=neuron_cost, base_macs=base,
                            heads_per_layer=[3, 3], neurons_per_layer=[5, 5])
    capacity = budget * base
    assert info["achieved_macs"] <= capacity + 1e-9
    assert info["importance_kept"] == pytest.approx(brute_force(table, capacity, head_cost, neuron_cost, capacity < head_cost))
    heads, neurons = kept.counts("head"), kept.counts("neuron")
    assert sum(heads) * head_cost + sum(neurons) * neuron_cost == pytest.approx(info["achieved_macs"])


def test_budget_below_one_head_keeps_no_head_and_stays_under_budget():
    table = scores(0)
    kept, info = search_mac(table, budget=0.05, head_cost=10.0, neuron_cost=3.0, base_macs=90.0,
                            heads_per_layer=[3, 3], neurons_per_layer=[5, 5])
    assert info["heads_kept"] == 0 and info["achieved_macs"] <= 4.5
    assert kept.counts("head") == [0, 0]


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.01])
def test_budget_outside_unit_interval_is_rejected(budget):
    with pytest.raises(ValueError, match="budget"):
        search_mac(scores(0), budget=budget, head_cost=1, neuron_cost=1, base_macs=10,
                   heads_per_layer=[3, 3], neurons_per_layer=[5, 5])


def test_a_mask_files_kept_round_trips_for_every_unit_kind():
    encoder = {"head": [[0, 2], []], "neuron": [[1], [3, 4]]}
    channels = {"channel": [[0], [5, 7, 9]]}
    for data in (encoder, channels):
        kept = Kept.from_json(json.loads(json.dumps(data)))
        assert kept.to_json() == data
    assert Kept.from_json(encoder).counts("neuron") == [1, 2]
    with pytest.raises(KeyError, match=r"keeps no 'channel' units; it has \['head', 'neuron'\]"):
        Kept.from_json(encoder)["channel"]
    with pytest.raises(ValueError, match="kept.head: expected a list of per-layer index lists"):
        Kept.from_json({"head": [0, 2]})
