from pathlib import Path

import pandas as pd

from optin.workflow import plots
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)
plots.miou_vs_flops(pd.read_csv(snakemake.input[0]), Path(snakemake.output.png).with_suffix(""),
                    "Segmentation: mIoU of the slimmed Mask2Former vs relative FLOPs")
