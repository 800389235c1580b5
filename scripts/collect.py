import json
import platform
import subprocess
from pathlib import Path

from importlib.metadata import version

import pandas as pd

from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


rows = []
for path, run in zip(snakemake.input.evals, snakemake.params.runs, strict=True):
    metrics = json.loads(Path(path).read_text())
    # "accuracy" holds the task's dev metric: top-1 / accuracy, or Spearman for a regressor (STS-B)
    keys = {"experiment": f"{run['model']}/{run['dataset']}", "model": run["model"], "dataset": run["dataset"],
            "method": run["method"], "calibration_size": run["calibration_size"], "seed": run["seed"],
            "budget": metrics.pop("budget"),
            "task_metric": metrics.pop("metric", "accuracy"),
            "device": metrics.pop("device", f"cpu:{platform.machine()}"),
            "budget_metric": metrics.pop("budget_metric", "macs")}
    # None: a metric that does not apply (a token-merged model has no table prediction)
    rows += [{**keys, "metric": name, "value": float(value)} for name, value in sorted(metrics.items()) if value is not None]
table = pd.DataFrame(rows)
table["torch"] = version("torch")
table["transformers"] = version("transformers")
table["git_revision"] = git_revision()
table.sort_values(["experiment", "method", "seed", "budget", "metric"]).to_csv(snakemake.output[0], index=False)
print(f"{len(table)} rows")
