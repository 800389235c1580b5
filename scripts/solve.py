import json
from pathlib import Path

import pandas as pd

from optin.arch.registry import family
from optin.engine.cost import cost_model
from optin.engine.latency_table import LatencyTable
from optin.methods.registry import entry_of
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
params = snakemake.params
info = json.loads(Path(snakemake.input.info).read_text())
scores = pd.read_parquet(snakemake.input.scores)
table = LatencyTable.read(snakemake.input.latency_table[0]) if snakemake.input.latency_table else None
costs = cost_model(family(params.family).cost_model).from_info(
    info, mac_seq_len=params.mac_seq_len, image_size=params.image_size, latency_table=table)
kept, result = costs.search(scores, params.budget, params.method, score_scale=entry_of(params.method).score_scale,
                            seed=params.seed)
result.setdefault("budget_metric", "macs")
result["kept"] = kept.to_json()
if "channels_kept" in result:
    summary = f"kept {result['channels_kept']} channels {result['channels_per_layer_kept']}"
else:
    summary = f"kept {result['heads_kept']} heads, {result['neurons_kept']} neurons, token merges {result['token_merges']}"
Path(snakemake.output[0]).write_text(json.dumps(result, indent=1) + "\n")
print(f"budget {result['budget']}: {summary}, ratio {result['achieved_ratio']:.4f}")
