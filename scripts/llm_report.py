import json
from pathlib import Path

import numpy as np
import pandas as pd

from optin.methods.registry import cost_reference
from optin.workflow import plots
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
rows = []
for path, run in zip(snakemake.input.evals, snakemake.params.runs, strict=True):
    metrics = json.loads(Path(path).read_text())
    rows.append({"experiment": run["exp"], "method": run["method"], "seed": run["seed"], **metrics})
table = pd.DataFrame(rows).sort_values(["experiment", "method", "seed", "budget"])
table.to_csv(snakemake.output.table, index=False)

costs = pd.DataFrame([json.loads(Path(p).read_text()) for p in snakemake.input.costs])
cost = costs.groupby("method").agg(seconds=("seconds", "mean"), macs=("macs", "mean"), runs=("seconds", "size"))
reference = cost_reference()
reference_seconds = cost["seconds"].get(reference, np.nan)
reference_macs = cost["macs"].get(reference, np.nan)


def spread(values: pd.Series, digits: int) -> str:
    return f"{values.mean():.{digits}f}" + (f" ± {values.std():.{digits}f}" if len(values) > 1 else "")


lines = []
for experiment, part in table.groupby("experiment"):
    dense = part.iloc[0]
    ppl = sorted(c for c in part.columns if c.startswith("perplexity_ctx"))
    dense_ppl = ", ".join(f"{c} {dense['dense_' + c]:.2f}" for c in ppl)
    lines += [f"## {experiment}", "",
              f"Dense: {dense_ppl}, zero-shot accuracy {dense['dense_zero_shot_accuracy']:.3f}, "
              f"{dense['dense_params'] / 1e6:.1f} M parameters.", "",
              "| method | budget | seeds | rel. MACs | " + " | ".join(ppl) + " | zero-shot acc. | params (M) | prefill × | decode × |",
              "|---|---|---|---|" + "---|" * len(ppl) + "---|---|---|---|"]
    for (method, budget), group in part.groupby(["method", "budget"]):
        lines.append(f"| {method} | {budget:.2f} | {len(group)} | {group['relative_macs'].mean():.3f} | "
                     + " | ".join(spread(group[c], 2) for c in ppl)
                     + f" | {spread(group['zero_shot_accuracy'], 3)} | {group['params'].mean() / 1e6:.1f} | "
                     f"{spread(group['prefill_speedup'], 2)} | {spread(group['decode_speedup'], 2)} |")
    lines.append("")
lines += ["## Scoring cost (one calibration batch, mean over seeds)", "",
          f"| scores of | wall s | MACs | × {reference} wall | × {reference} MACs |", "|---|---|---|---|---|"]
for method, row in cost.iterrows():
    lines.append(f"| {method} | {row['seconds']:.1f} | {row['macs']:.3g} | {row['seconds'] / reference_seconds:.3g} | "
                 f"{row['macs'] / reference_macs if reference_macs else float('nan'):.3g} |")
Path(snakemake.output.methods).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
plots.llm_quality_vs_macs(table, Path(snakemake.output.figure[0]).with_suffix(""),
                          "Decoder LLM: perplexity and zero-shot accuracy vs relative MACs")
