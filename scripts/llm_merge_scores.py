import json
from pathlib import Path

import pandas as pd

from optin.engine.flops import llm_forward_macs, llm_scoring_macs
from optin.engine.settings import OptinMethod
from optin.methods.optin import combine
from optin.methods.registry import METHODS, SHARDED
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
raw = pd.concat([pd.read_parquet(path) for path in snakemake.input.shards], ignore_index=True)
info = json.loads(Path(snakemake.input.info).read_text())
scores = combine(raw, OptinMethod.from_config(snakemake.params.method), info["num_layers"])
scores.to_parquet(snakemake.output.scores, index=False)
# Wall time of the layer shards (their Snakemake benchmarks), summed: the scoring's CPU-seconds when
# shards ran one per core.
seconds = sum(float(pd.read_csv(path, sep="\t")["s"].iloc[0]) for path in snakemake.input.benchmarks)
calibration = snakemake.params.calibration
macs = llm_scoring_macs(METHODS[SHARDED].scoring_passes, info, calibration["windows"], calibration["context"])
Path(snakemake.output.cost).write_text(json.dumps({
    "method": SHARDED, "seconds": seconds, "units": len(scores), "macs": macs,
    "dense_forward_macs": llm_forward_macs(info, calibration["windows"], calibration["context"])}, indent=1) + "\n")
print(scores.groupby("kind")["importance"].describe())
