import json
from pathlib import Path

import pandas as pd

from optin import flops
from optin.runtime import start_job
from optin.search import search_mac

start_job(snakemake.log[0], threads=1)
info = json.loads(Path(snakemake.input.info).read_text())
seq_len = snakemake.params.mac_seq_len
seq_len = info["mean_test_tokens"] if seq_len == "auto" else float(seq_len)
head_cost = flops.head_macs(seq_len, info["hidden_size"], info["head_dim"])
neuron_cost = flops.neuron_macs(seq_len, info["hidden_size"])
base = flops.encoder_macs(info["heads_per_layer"], info["neurons_per_layer"], seq_len, info["hidden_size"], info["head_dim"])
kept, result = search_mac(
    pd.read_parquet(snakemake.input.scores), budget=snakemake.params.budget, head_cost=head_cost,
    neuron_cost=neuron_cost, base_macs=base, heads_per_layer=info["heads_per_layer"],
    neurons_per_layer=info["neurons_per_layer"],
)
result.update({"mac_seq_len": seq_len, "head_macs": head_cost, "neuron_macs": neuron_cost, "kept": kept.to_json()})
Path(snakemake.output[0]).write_text(json.dumps(result, indent=1) + "\n")
print(f"budget {result['budget']}: kept {result['heads_kept']} heads, {result['neurons_kept']} neurons, ratio {result['achieved_ratio']:.4f}")
