import json
from pathlib import Path

import numpy as np
import pandas as pd

from optin import flops
from optin.arch.registry import family
from optin.flops import MacOp
from optin.runtime import start_job
from optin.latency_table import LatencyTable
from optin.search import cost_weighted, search_channels, search_latency, search_mac, search_tau

start_job(snakemake.log[0], threads=1, light=True)
params = snakemake.params
info = json.loads(Path(snakemake.input.info).read_text())
# The solver reads OPTIN-tau's token settings and the channel ranking; baselines use the defaults.
prune_tokens = params.method.get("prune_tokens", False)
scores = pd.read_parquet(snakemake.input.scores)
# Weight-magnitude and random scores have no scale shared by heads and neurons (optin.search.cost_weighted).
unscaled_kinds = params.method.get("kind") in ("magnitude", "random")

cost_model = family(params.family).cost_model
if cost_model == "channels":
    # CNN channels: whole-network MACs, exact for the kept counts (optin.arch.cnn).
    kept, result = search_channels(scores, budget=params.budget, ops=[MacOp(**op) for op in info["mac_ops"]],
                                   channels_per_layer=info["channels_per_layer"],
                                   min_per_layer=info["min_channels_per_layer"],
                                   ranking=params.method.get("channel_ranking", "per_mac"))
    result["input_size"] = info["input_size"]
    summary = f"kept {result['channels_kept']} channels {result['channels_per_layer_kept']}"
elif cost_model == "per_layer":
    # A MAC cost per unit and layer from model_info: windowed attention (Swin), where a unit's cost
    # depends on its stage's width and resolution, or any family whose units the encoder model
    # (multi-head attention, a two-matrix FFN) does not price.
    heads, neurons = info["heads_per_layer"], info["neurons_per_layer"]
    head_cost, neuron_cost = info["head_macs_per_layer"], info["neuron_macs_per_layer"]
    base = sum(h * c for h, c in zip(heads, head_cost, strict=True)) + sum(n * c for n, c in zip(neurons, neuron_cost, strict=True))
    if unscaled_kinds:
        scores = cost_weighted(scores, head_cost, neuron_cost)
    kept, result = search_mac(scores, budget=params.budget, head_cost=head_cost, neuron_cost=neuron_cost, base_macs=base,
                              heads_per_layer=heads, neurons_per_layer=neurons)
    result.update({"token_merges": None, "input_size": info.get("input_size"), "head_macs_per_layer": head_cost,
                   "neuron_macs_per_layer": neuron_cost})
else:
    heads, neurons = info["heads_per_layer"], info["neurons_per_layer"]
    seq_len = params.mac_seq_len
    if seq_len == "auto":
        # Text: mean tokenized test length. Images: the real token count at the dataset's image size.
        seq_len = info["mean_test_tokens"] if "patch_size" not in info else (
            (params.image_size // info["patch_size"]) ** 2 + info["prefix_tokens"])
    seq_len = float(seq_len)
    hidden, head_dim = info["hidden_size"], info["head_dim"]
    if unscaled_kinds:
        scores = cost_weighted(scores, flops.head_macs(seq_len, hidden, head_dim), flops.neuron_macs(seq_len, hidden))
    if prune_tokens:
        low, high = params.method["tau_head_neuron_share"]
        # The authors draw the share at random; here it is seeded by (seed, budget), and recorded.
        rng = np.random.default_rng([params.seed, int(round(params.budget * 1000))])
        share = float(rng.uniform(low, high))
        kept, removed, result = search_tau(
            scores, budget=params.budget, head_neuron_share=share, seq_len=seq_len, hidden=hidden, head_dim=head_dim,
            heads_per_layer=heads, neurons_per_layer=neurons,
            max_removed=(params.image_size // info["patch_size"]) ** 2 - 1,
            uniform=params.method.get("token_schedule") == "uniform")
        result["token_merges"] = [removed[0]] + [b - a for a, b in zip(removed, removed[1:])]
    elif params.method.get("budget_metric") == "latency":
        kept, result = search_latency(scores, budget=params.budget, table=LatencyTable.read(snakemake.input.latency_table[0]),
                                      heads_per_layer=heads, neurons_per_layer=neurons)
        # The MACs of the mask found, which evaluate recounts from the slim model's weights.
        base = flops.encoder_macs(heads, neurons, seq_len, hidden, head_dim)
        achieved = flops.encoder_macs(kept.counts("head"), kept.counts("neuron"), seq_len, hidden, head_dim)
        result.update({"base_macs": base, "achieved_macs": achieved, "achieved_ratio": achieved / base, "token_merges": None})
    else:
        base = flops.encoder_macs(heads, neurons, seq_len, hidden, head_dim)
        kept, result = search_mac(
            scores, budget=params.budget, head_cost=flops.head_macs(seq_len, hidden, head_dim),
            neuron_cost=flops.neuron_macs(seq_len, hidden), base_macs=base, heads_per_layer=heads,
            neurons_per_layer=neurons)
        result["token_merges"] = None
    result.update({"mac_seq_len": seq_len, "head_macs": flops.head_macs(seq_len, hidden, head_dim),
                   "neuron_macs": flops.neuron_macs(seq_len, hidden)})
result.setdefault("budget_metric", "macs")
result["kept"] = kept.to_json()
if cost_model != "channels":
    summary = f"kept {result['heads_kept']} heads, {result['neurons_kept']} neurons, token merges {result['token_merges']}"
Path(snakemake.output[0]).write_text(json.dumps(result, indent=1) + "\n")
print(f"budget {result['budget']}: {summary}, ratio {result['achieved_ratio']:.4f}")
