"""Cross-checks of a workflow configuration that a JSON schema cannot express.

Runs when the DAG is built, before any job: every message names the offending key and what was
expected. Kept light (no torch / transformers import) because Snakemake evaluates it at parse time.
"""

from __future__ import annotations

import re
from pathlib import Path

from optin.methods import OptinMethod
from optin.models import PACKAGED_MODELS
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ConfigError(ValueError):
    pass


def budget_label(budget: float) -> str:
    return f"{budget:.3f}"


# Two disjoint calibration batches are always drawn (cheap), so that adding a method that scores
# heads and neurons on different batches (§4.7) never invalidates the cached calibration.
CALIBRATION_DRAWS = 2


def check(config: dict, base_dir: Path = Path(".")) -> None:
    errors: list[str] = []
    run = config["run"]
    for name in run["experiments"]:
        if name not in config["experiments"]:
            errors.append(f"run.experiments: unknown experiment {name!r}; defined: {sorted(config['experiments'])}")
    for name, exp in config["experiments"].items():
        if exp["model"] not in config["models"]:
            errors.append(f"experiments.{name}.model: unknown model id {exp['model']!r}; defined: {sorted(config['models'])}")
        if exp["dataset"] not in config["datasets"]:
            errors.append(f"experiments.{name}.dataset: unknown dataset {exp['dataset']!r}; defined: {sorted(config['datasets'])}")
    for name in run["methods"]:
        if name not in config["methods"]:
            errors.append(f"run.methods: unknown method {name!r}; defined: {sorted(config['methods'])}")
    for name, method in config["methods"].items():
        try:
            OptinMethod.from_config(method)
        except ValueError as err:
            errors.append(f"methods.{name}: {err}")
    labels = [budget_label(b) for b in run["budgets"]]
    if len(set(labels)) != len(labels):
        errors.append(f"run.budgets: budgets {run['budgets']} collide at 3 decimals ({labels})")
    for name, model in config["models"].items():
        source = model["source"]
        where = f"models.{name}.source"
        if source["kind"] == "packaged" and source.get("package") not in PACKAGED_MODELS:
            errors.append(f"{where}.package: unknown packaged model id {source.get('package')!r}; known: {sorted(PACKAGED_MODELS)}")
        if source["kind"] == "hub":
            if not HUB_ID.match(str(source.get("id", ""))):
                errors.append(f"{where}.id: {source.get('id')!r} is not a hub model id of the form org/name")
            if not source.get("revision"):
                errors.append(f"{where}.revision: hub models must pin a revision (commit hash or tag)")
        finetune = model.get("finetune")
        if finetune and finetune["dataset"] not in config["datasets"]:
            errors.append(f"models.{name}.finetune.dataset: unknown dataset {finetune['dataset']!r}")
    n_calib = config["calibration"]["n"]
    for name, dataset in config["datasets"].items():
        source = dataset["source"]
        if source["kind"] == "csv":
            path = Path(source["path"])
            path = path if path.is_absolute() else base_dir / path
            if not path.is_file():
                errors.append(f"datasets.{name}.source.path: dataset file {path} does not exist (expected a CSV with columns text,label)")
        pool = dataset["split"]["calib_pool"]
        if n_calib * CALIBRATION_DRAWS > pool:
            errors.append(
                f"calibration.n: {CALIBRATION_DRAWS} batches of {n_calib} need {n_calib * CALIBRATION_DRAWS} rows but "
                f"datasets.{name}.split.calib_pool is {pool}"
            )
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
