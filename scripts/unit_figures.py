import json
from pathlib import Path

import pandas as pd

from optin.workflow import plots
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
w, out = snakemake.wildcards, snakemake.output
masks = {}
for path, method in zip(snakemake.input.masks, snakemake.params.mask_methods, strict=True):
    mask = json.loads(Path(path).read_text())
    masks[(method, mask["budget"])] = mask
scores = pd.read_parquet(snakemake.input.scores)
units = scores[scores["kind"] != "token"].groupby(["kind", "layer"]).size()
totals = {kind: [int(units.get((kind, layer), 0)) for layer in range(snakemake.params.num_layers)]
          for kind in dict.fromkeys(scores["kind"]) if kind != "token"}
experiment = f"{w.model}/{w.dataset}"
plots.kept_units(masks, totals, Path(out.kept_png).with_suffix(""), f"{experiment}: units kept per layer")
method = scores["method"].iloc[0] if "method" in scores else ""
plots.importance_distributions(scores, Path(out.importance_png).with_suffix(""), f"{experiment}: {method} importance per layer")
