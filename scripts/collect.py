import json
import platform
import subprocess
from pathlib import Path

from importlib.metadata import version

import pandas as pd

from optin.runtime import start_job

start_job(snakemake.log[0], threads=1, light=True)


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# results/eval/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.json
rows = []
for path in map(Path, snakemake.input.evals):
    model, dataset, method, run = path.parts[-5:-1]
    n_calib, seed = run.removeprefix("calib").split("-seed")
    metrics = json.loads(path.read_text())
    # "accuracy" holds the task's dev metric: top-1 / accuracy, or Spearman for a regressor (STS-B)
    keys = {"experiment": f"{model}/{dataset}", "model": model, "dataset": dataset, "method": method,
            "calibration_size": int(n_calib), "seed": int(seed), "budget": metrics.pop("budget"),
            "task_metric": metrics.pop("metric", "accuracy"),
            "device": metrics.pop("device", f"cpu:{platform.machine()}")}
    rows += [{**keys, "metric": name, "value": float(value)} for name, value in sorted(metrics.items())]
table = pd.DataFrame(rows)
table["torch"] = version("torch")
table["transformers"] = version("transformers")
table["git_revision"] = git_revision()
table.sort_values(["experiment", "method", "seed", "budget", "metric"]).to_csv(snakemake.output[0], index=False)
print(f"{len(table)} rows")
