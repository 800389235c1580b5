"""Latency lookup tables, the latency-budgeted search, and NViT's saliency (issue 30)."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from optin.arch import adapter_for
from optin.engine.latency import measure_table
from optin.engine.latency_table import LatencyTable, neuron_grid
from optin.methods.nvit import GROUP_CONSTANTS, nvit_scores
from optin.engine.search import search_latency, search_mac

from conftest import padded_batch, tiny_bert


def toy_scores(heads: dict, neurons: dict) -> pd.DataFrame:
    return pd.DataFrame([{"layer": l, "kind": kind, "index": i, "importance": v}
                         for kind, values in (("head", heads), ("neuron", neurons)) for (l, i), v in values.items()])


def toy_table(attention_per_unit=1.0, ffn_per_unit=3.0, rest=1.0, layers=2, heads=2, neurons=2) -> LatencyTable:
    """S(h, 0) and S(0, n) of a model whose layer costs are linear in the kept units."""
    ffn_full = layers * ffn_per_unit * neurons
    attention_full = layers * attention_per_unit * heads
    return LatencyTable.from_timings(
        num_layers=layers, dense_s=rest + attention_full + ffn_full,
        heads_s={h: rest + layers * attention_per_unit * h for h in range(heads + 1)},
        neurons_s={n: rest + layers * ffn_per_unit * n for n in range(neurons + 1)})


# Heads are cheap in latency (1 each) and dear in MACs (4 each); neurons the reverse (3 and 1).
HEADS = {(0, 0): 4.0, (1, 0): 3.5, (0, 1): 1.0, (1, 1): 0.9}
NEURONS = {(0, 0): 2.0, (1, 0): 1.9, (0, 1): 1.8, (1, 1): 1.2}


def brute_force(cost, capacity):
    """The most important subset of all 8 units whose additive ``cost`` fits ``capacity``."""
    units = [("head", k, v) for k, v in HEADS.items()] + [("neuron", k, v) for k, v in NEURONS.items()]
    best = (-1.0, None)
    for chosen in itertools.product([0, 1], repeat=len(units)):
        picked = [u for u, c in zip(units, chosen, strict=True) if c]
        if cost(picked) <= capacity + 1e-12 and sum(u[2] for u in picked) > best[0]:
            best = (sum(u[2] for u in picked), picked)
    kept = {"head": [[], []], "neuron": [[], []]}
    for kind, (layer, index), _ in best[1]:
        kept[kind][layer].append(index)
    return {kind: [sorted(layer) for layer in layers] for kind, layers in kept.items()}


def as_lists(kept):
    return {kind: [list(layer) for layer in kept[kind]] for kind in ("head", "neuron")}


def test_latency_search_finds_the_latency_optimum_where_the_mac_optimum_differs():
    table, scores = toy_table(), toy_scores(HEADS, NEURONS)
    mac_kept, _ = search_mac(scores, budget=0.5, head_cost=4.0, neuron_cost=1.0, base_macs=20.0,
                             heads_per_layer=[2, 2], neurons_per_layer=[2, 2])
    lat_kept, info = search_latency(scores, budget=0.5, table=table, heads_per_layer=[2, 2], neurons_per_layer=[2, 2])

    def macs(units):
        return sum(4.0 if kind == "head" else 1.0 for kind, _, _ in units)

    def latency(units):
        return sum(1.0 if kind == "head" else 3.0 for kind, _, _ in units)

    assert as_lists(mac_kept) == brute_force(macs, 0.5 * 20.0) == {"head": [[0], [0]], "neuron": [[0], [0]]}
    assert as_lists(lat_kept) == brute_force(latency, 0.5 * table.dense_s - table.rest_s) == {
        "head": [[0, 1], [0, 1]], "neuron": [[0], []]}
    # The MAC optimum breaks the latency budget; the latency one meets it.
    assert table.predict(mac_kept.counts("head"), mac_kept.counts("neuron")) > 0.5 * table.dense_s
    assert info["predicted_latency_s"] == pytest.approx(table.predict([2, 2], [1, 0])) == 8.0
    assert info["predicted_latency_s"] <= info["target_latency_s"] == 0.5 * table.dense_s


def test_the_table_predicts_its_own_dense_measurement_and_cleans_noise_monotonically():
    table = LatencyTable.from_timings(num_layers=3, dense_s=10.0, heads_s={0: 6.0, 1: 7.5, 2: 7.2, 3: 9.0},
                                      neurons_s={0: 5.0, 4: 4.9, 8: 8.0})
    assert table.predict([3, 3, 3], [8, 8, 8]) == pytest.approx(10.0)
    # noise: 1 head measured slower than 2 (pooled to their mean); 4 neurons faster than none (0)
    assert table.attention_s == pytest.approx((0.0, 0.45, 0.45, 1.0))
    assert table.ffn_s == pytest.approx((0.0, 0.0, 1.0))
    assert table.ffn(6) == pytest.approx(0.5)  # linear between grid points
    assert table.rest_s == pytest.approx(10.0 - 3 * (1.0 + 1.0))
    assert LatencyTable.from_json(table.to_json()) == table


def test_a_measured_table_on_a_real_slim_model():
    model = tiny_bert(layers=2, heads=4, hidden=32, ffn=48)
    table = measure_table(adapter_for(model, "bert"), padded_batch(), repeats=2, warmup=1, grid_points=4,
                          conditions={"device": "cpu"})
    assert table.neuron_grid == (0, 16, 32, 48) == tuple(neuron_grid(48, 4))
    assert table.heads == 4 and table.neurons == 48 and table.conditions["device"] == "cpu"
    assert table.predict([4, 4], [48, 48]) == pytest.approx(table.dense_s, rel=1e-12)
    assert table.dense_s == table.measured["dense"]
    assert all(np.diff(table.attention_s) >= 0) and all(np.diff(table.ffn_s) >= 0)


@pytest.mark.parametrize("seed", range(20))
def test_latency_budgeted_masks_never_exceed_the_predicted_budget(seed):
    rng = np.random.default_rng(seed)
    layers, heads, neurons = 3, 4, 12
    grid = neuron_grid(neurons, 4)
    attention = np.cumsum(rng.uniform(0, 1, heads + 1) * (np.arange(heads + 1) > 0))
    ffn = np.cumsum(rng.uniform(0, 1, len(grid)) * (np.arange(len(grid)) > 0))
    rest = rng.uniform(0.1, 2.0)
    table = LatencyTable.from_timings(
        num_layers=layers, dense_s=rest + layers * (attention[-1] + ffn[-1]),
        heads_s={h: rest + layers * attention[h] for h in range(heads + 1)},
        neurons_s={n: rest + layers * ffn[i] for i, n in enumerate(grid)})
    scores = toy_scores({(l, i): rng.random() for l in range(layers) for i in range(heads)},
                        {(l, i): rng.random() * 0.3 for l in range(layers) for i in range(neurons)})
    for budget in np.linspace(table.rest_s / table.dense_s + 1e-3, 1.0, 9):
        kept, info = search_latency(scores, budget=float(budget), table=table, heads_per_layer=[heads] * layers,
                                    neurons_per_layer=[neurons] * layers)
        predicted = table.predict(kept.counts("head"), kept.counts("neuron"))
        assert predicted == pytest.approx(info["predicted_latency_s"])
        assert predicted <= (budget + 2e-12) * table.dense_s
    full, _ = search_latency(scores, budget=1.0, table=table, heads_per_layer=[heads] * layers, neurons_per_layer=[neurons] * layers)
    assert full.counts("head") == [heads] * layers and full.counts("neuron") == [neurons] * layers


def test_a_budget_below_the_fixed_rest_is_refused_with_the_numbers():
    table = toy_table(rest=10.0)
    with pytest.raises(ValueError, match="below the table's fixed rest"):
        search_latency(toy_scores(HEADS, NEURONS), budget=0.3, table=table, heads_per_layer=[2, 2], neurons_per_layer=[2, 2])


def _scaled_loss(model, batch, labels, names, scale):
    """Cross-entropy with the named parameter rows multiplied by ``scale``."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for name, rows in names:
            model.get_parameter(name)[rows] *= scale
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
        model.load_state_dict(state)
    return float(loss)


def test_nvit_scores_equal_the_formula_by_finite_differences():
    """d/da L(group scaled by 1 + a) at 0 is the group's sum of w * dL/dw: NViT's contribution."""
    model = tiny_bert(layers=2, heads=4, hidden=16, ffn=8).double()
    batch, labels = padded_batch(), torch.tensor([0, 1, 2, 0, 1, 2])
    scores = nvit_scores(adapter_for(model, "bert"), batch, labels, fisher_batch_size=3)
    eps, dh = 1e-6, 4
    for kind, layer, index in [("head", 0, 1), ("head", 1, 3), ("neuron", 0, 5), ("neuron", 1, 0)]:
        prefix = f"bert.encoder.layer.{layer}."
        if kind == "head":
            rows = slice(index * dh, (index + 1) * dh)
            names = [(f"{prefix}attention.self.{p}.{s}", rows) for p in ("query", "key", "value") for s in ("weight", "bias")]
        else:
            names = [(f"{prefix}intermediate.dense.{s}", index) for s in ("weight", "bias")]
        per_batch = []
        for start in (0, 3):
            part = {k: v[start:start + 3] for k, v in batch.items()}
            slope = (_scaled_loss(model, part, labels[start:start + 3], names, 1 + eps)
                     - _scaled_loss(model, part, labels[start:start + 3], names, 1 - eps)) / (2 * eps)
            per_batch.append((slope / GROUP_CONSTANTS[kind]) ** 2)
        row = scores[(scores["kind"] == kind) & (scores["layer"] == layer) & (scores["index"] == index)].iloc[0]
        assert row["importance"] == pytest.approx(np.mean(per_batch), rel=1e-5)
    assert GROUP_CONSTANTS == {"head": 12.0, "neuron": 1.0}


def test_nvit_latency_term_subtracts_eta_times_the_latency_a_unit_saves():
    model = tiny_bert(layers=2, heads=2, hidden=16, ffn=2).double()
    batch, labels = padded_batch(), torch.tensor([0, 1, 2, 0, 1, 2])
    adapter = adapter_for(model, "bert")
    table = toy_table(attention_per_unit=0.5, ffn_per_unit=2.0)
    plain = nvit_scores(adapter, batch, labels)
    aware = nvit_scores(adapter, batch, labels, latency_eta=5e-4, latency_table=table)
    saved = aware["kind"].map({"head": 0.5, "neuron": 2.0})
    assert np.allclose(aware["importance"], plain["importance"] - 5e-4 * saved)
    with pytest.raises(ValueError, match="latency table"):
        nvit_scores(adapter, batch, labels, latency_eta=5e-4)
