from optin.runtime import start_job

start_job(snakemake.log[0], threads=1, family=snakemake.params.family)

from optin.arch import adapter_for, family  # noqa: E402
from optin.baselines import magnitude_scores, random_scores  # noqa: E402
from optin.methods import write_scores  # noqa: E402

params = snakemake.params
# weights and unit counts only: the family's scoring loader suffices
adapter = adapter_for(family(params.family).load_for_scoring(snakemake.input.checkpoint), params.family)
scores = magnitude_scores(adapter) if params.kind == "magnitude" else random_scores(adapter, params.seed)
w = snakemake.wildcards
write_scores(scores, snakemake.output[0], model=w.model, dataset=w.dataset, method=w.method, seed=w.seed)
print(scores.groupby(["kind", "layer"])["importance"].describe())
