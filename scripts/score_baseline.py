from optin.runtime import start_job

start_job(snakemake.log[0], threads=1)

from optin.arch import adapter_for  # noqa: E402
from optin.baselines import magnitude_scores, random_scores  # noqa: E402
from optin.models import load_checkpoint  # noqa: E402

params = snakemake.params
adapter = adapter_for(load_checkpoint(params.family, snakemake.input.checkpoint))
scores = magnitude_scores(adapter) if params.kind == "magnitude" else random_scores(adapter, params.seed)
w = snakemake.wildcards
scores.insert(0, "model", w.model)
scores.insert(1, "dataset", w.dataset)
scores.insert(2, "method", w.method)
scores.insert(3, "seed", int(w.seed))
scores.to_parquet(snakemake.output[0], index=False)
print(scores.groupby(["kind", "layer"])["importance"].describe())
