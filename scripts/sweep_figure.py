import json
from pathlib import Path

from optin.workflow import plots, sweeps
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
params, out = snakemake.params, snakemake.output
table = sweeps.sweep_table(params.runs, [json.loads(Path(p).read_text()) for p in snakemake.input.evals])
table.to_csv(out.csv, index=False)
summary = sweeps.summary(table)
plots.sweep(summary, Path(out.png).with_suffix(""), params.title, params.axis, float(table["unpruned_accuracy"].iloc[0]))
print(summary.to_string())
