import pandas as pd

from optin.methods import OptinMethod, combine
from optin.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
raw = pd.concat([pd.read_parquet(path) for path in snakemake.input], ignore_index=True)
method = OptinMethod.from_config(snakemake.params.method)
scores = combine(raw, method, snakemake.params.num_layers)
w = snakemake.wildcards
scores.insert(0, "model", w.model)
scores.insert(1, "dataset", w.dataset)
scores.insert(2, "method", w.method)
scores.insert(3, "seed", int(w.seed))
scores.to_parquet(snakemake.output[0], index=False)
print(scores.groupby("kind")["importance"].describe())
