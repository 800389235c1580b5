import json
from pathlib import Path

import pandas as pd

from optin.flops import llm_unit_macs
from optin.llm_config import LOSS_SCALED
from optin.runtime import start_job
from optin.search import cost_weighted, relative_to_layer_mean, removed_channel_means, search_mac, search_threshold

start_job(snakemake.log[0], threads=1, light=True)
params = snakemake.params
info = json.loads(Path(snakemake.input.info).read_text())
scores = pd.read_parquet(snakemake.input.scores)
kind, context = params.method["kind"], params.mac_context
d, dh, group = info["hidden_size"], info["head_dim"], info["channel_group"]
costs = llm_unit_macs(d, dh, context, group)
head_cost, kv_cost, neuron_cost = costs["head"], costs["kv"], costs["neuron"]
layers, gqa_group = info["num_layers"], info["heads"] // info["kv_heads"]
heads_per_layer = [info["heads"]] * layers
groups_per_layer = [info["intermediate_size"] // group] * layers
base = layers * (info["heads"] * head_cost + info["kv_heads"] * kv_cost + groups_per_layer[0] * neuron_cost)
common = dict(budget=params.budget, base_macs=base, heads_per_layer=heads_per_layer, neurons_per_layer=groups_per_layer)
if params.method.get("structure") == "adaptive":
    kept, result = search_threshold(scores, head_cost=head_cost, kv_cost=kv_cost, group_size=gqa_group,
                                    neuron_cost=neuron_cost, by="standardized", **common)
    search = "FLAP's own structure (AL-AM): one ranking of standardized scores, kept from the top within the budget"
else:
    if kind not in ("optin",) + LOSS_SCALED:
        # no loss scale shared by heads and channels: relative to the layer's mean, weighed by MACs
        scores = cost_weighted(relative_to_layer_mean(scores), head_cost, neuron_cost)
    kept, result = search_mac(scores, head_cost=head_cost, neuron_cost=neuron_cost, kv_heads=(kv_cost, gqa_group), **common)
    search = "common global search (optin.search.search_mac with KV heads)"
if params.method.get("bias_compensation"):
    result["removed_channel_means"] = removed_channel_means(scores, kept, dh, group)
    search += ", with FLAP's bias compensation"
result.update({"kept": kept.to_json(), "mac_context": context, "method": params.method, "search": search,
               "kv_heads_kept": sum(len({h // gqa_group for h in layer}) for layer in kept["head"]),
               "head_macs": head_cost, "kv_macs": kv_cost, "neuron_macs": neuron_cost, "channel_group": group})
Path(snakemake.output[0]).write_text(json.dumps(result, indent=1) + "\n")
print(f"budget {params.budget}: {result['heads_kept']} heads, {result['kv_heads_kept']} KV heads, "
      f"{result['neurons_kept']} channel groups, ratio {result['achieved_ratio']:.4f}")
