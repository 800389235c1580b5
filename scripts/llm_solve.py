import json
from pathlib import Path

import pandas as pd

from optin.arch.registry import family
from optin.engine.cost import cost_model
from optin.methods.registry import entry_of
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
params = snakemake.params
info = json.loads(Path(snakemake.input.info).read_text())
scores = pd.read_parquet(snakemake.input.scores)
costs = cost_model(family("llama").cost_model).from_info(info, mac_context=params.mac_context)
kept, result = costs.search(scores, params.budget, params.method, score_scale=entry_of(params.method).score_scale)
result.update({"kept": kept.to_json(), "method": params.method})
Path(snakemake.output[0]).write_text(json.dumps(result, indent=1) + "\n")
print(f"budget {params.budget}: {result['heads_kept']} heads, {result['kv_heads_kept']} KV heads, "
      f"{result['neurons_kept']} channel groups, ratio {result['achieved_ratio']:.4f}")
