from pathlib import Path

import pandas as pd

from optin import plots
from optin.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
metrics = pd.read_csv(snakemake.input[0])
out = snakemake.output
# CNN experiments have their own figure (cnn_curves).
metrics = metrics[~metrics["experiment"].isin(snakemake.params.cnn_experiments)]
plots.accuracy_vs_flops(metrics, Path(out.accuracy_png).with_suffix(""), "Accuracy of the slimmed classifier vs relative FLOPs")
plots.speedup_vs_flops(metrics, Path(out.speedup_png).with_suffix(""), "Measured CPU speed-up vs relative FLOPs")
plots.delta_top1_vs_flops(metrics, Path(out.delta_top1_png).with_suffix(""), snakemake.params.vision_references)
