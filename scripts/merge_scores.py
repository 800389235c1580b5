import pandas as pd

from optin.engine.settings import OptinMethod

from optin.methods.optin import combine, write_scores
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
raw = pd.concat([pd.read_parquet(path) for path in snakemake.input], ignore_index=True)
method = OptinMethod.from_config(snakemake.params.method)
scores = combine(raw, method, snakemake.params.num_layers)
w = snakemake.wildcards
write_scores(scores, snakemake.output[0], model=w.model, dataset=w.dataset, method=w.method, seed=w.seed)
print(scores.groupby("kind")["importance"].describe())
