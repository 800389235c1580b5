from pathlib import Path

import pandas as pd

from optin.workflow import plots, tables
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
params, out = snakemake.params, snakemake.output
metrics = pd.read_csv(snakemake.input.metrics)
table = tables.method_table(metrics, params.experiments)
table.to_csv(out.methods_csv, index=False)
Path(out.methods_md).write_text(tables.to_markdown(table))
plots.method_comparison(metrics, Path(out.comparison_png).with_suffix(""), params.experiments,
                        "Methods at equal MACs: same checkpoint, calibration data and search (band: ± 1 std over seeds)")
plots.accuracy_vs_speedup(metrics, Path(out.speedup_png).with_suffix(""), params.experiments,
                          "Accuracy against measured speed-up: MAC budgets (solid) and latency budgets (dashed)")

rows = []
for job in params.jobs:
    units = len(pd.read_parquet(job["scores"], columns=["kind"]))
    forward, backward = tables.scoring_passes(job["kind"], units, job["calibration_size"], job["masks_tuned"], job["stages"])
    rows.append({"experiment": job["experiment"], "method": job["method"], "seed": job["seed"], "kind": job["kind"],
                 "calibration_size": job["calibration_size"], "units": units, "scoring_jobs": len(job["benchmarks"]),
                 "scoring_wall_s": sum(tables.read_benchmark_seconds(b) for b in job["benchmarks"]),
                 "forward_passes": forward, "backward_passes": backward})
cost = pd.DataFrame(rows)
cost.to_csv(out.cost_csv, index=False)
plots.scoring_cost(cost, Path(out.cost_png).with_suffix(""), "Scoring cost per method (wall time of the scoring jobs)")
print(tables.to_markdown(table))
print(cost.groupby(["experiment", "method"])[["scoring_wall_s", "forward_passes", "backward_passes"]].mean())
