from pathlib import Path

import pandas as pd

from optin.workflow import plots
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
metrics = pd.read_csv(snakemake.input[0])
out = snakemake.output
# CNN experiments have their own figure (cnn_curves).
metrics = metrics[~metrics["experiment"].isin(snakemake.params.cnn_experiments)]
plots.accuracy_vs_flops(metrics, Path(out.accuracy_png).with_suffix(""), "Accuracy of the slimmed classifier vs relative FLOPs")
params = snakemake.params
plots.speedup_vs_flops(metrics, Path(out.speedup_png).with_suffix(""), "Measured speed-up vs relative FLOPs",
                       {**params.text_references, **params.vision_references})
plots.delta_vs_flops(metrics, Path(out.delta_top1_png).with_suffix(""), params.vision_references, "top-1")
plots.delta_vs_flops(metrics, Path(out.delta_accuracy_png).with_suffix(""), params.text_references,
                     "dev metric (accuracy; Spearman for STS-B)")
