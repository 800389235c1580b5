"""Sweeps: one knob varied on one experiment, read as accuracy at fixed MAC budgets against the
swept value (config key ``sweeps``; figures by rule sweep_figure).

A sweep varies either the calibration size, for a few methods side by side::

    text_calibration_size: {experiment: minilm_rt, axis: calibration sentences,
                            calibration_n: [8, 16, 32, 64], methods: [optin, kwon]}

or the method, one configured method per point::

    text_lambda_c: {experiment: minilm_rt, axis: KL weight,
                    points: [{value: MD only, method: optin_md_only}, {value: 0.1, method: optin}]}

Every point runs at the experiment's seeds (bands: ± one std over them) and at ``budgets``
(default 0.5 and 0.7 of the MACs). No torch here: the rules read it while parsing the workflow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from optin.workflow.config import calibration_n, experiment_seeds

DEFAULT_BUDGETS = (0.5, 0.7)


@dataclass(frozen=True)
class SweepRun:
    """One evaluation a sweep reads: ``value`` is its x position, ``series`` its line (the method
    of a calibration sweep; empty for a method sweep, whose method changes along x)."""

    value: str | int | float
    series: str
    method: str
    n: int
    seed: int
    budget: float


def sweep_runs(config: dict, name: str) -> list[SweepRun]:
    sweep = config["sweeps"][name]
    seeds = experiment_seeds(config, sweep["experiment"])
    budgets = sweep.get("budgets", DEFAULT_BUDGETS)
    if "points" in sweep:
        n = calibration_n(config, sweep["experiment"])
        cells = [(p["value"], "", p["method"], n) for p in sweep["points"]]
    else:
        cells = [(n, m, m, n) for n in sweep["calibration_n"] for m in sweep["methods"]]
    return [SweepRun(value, series, method, n, seed, float(b))
            for value, series, method, n in cells for seed in seeds for b in budgets]


def sweep_table(runs: list[dict], metrics: list[dict]) -> pd.DataFrame:
    """One row per evaluation: the run's fields beside its accuracy and relative MACs (``runs`` as
    SweepRun dicts, ``metrics`` the evaluation JSONs in the same order)."""
    if len(runs) != len(metrics):
        raise ValueError(f"{len(runs)} sweep runs but {len(metrics)} evaluations")
    rows = [{**run, "value": str(run["value"]), "accuracy": m["accuracy"], "relative_macs": m["relative_macs"],
             "unpruned_accuracy": m["unpruned_accuracy"]} for run, m in zip(runs, metrics)]
    return pd.DataFrame(rows, columns=[*SweepRun.__dataclass_fields__, "accuracy", "relative_macs", "unpruned_accuracy"])


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (series, value, budget), values in sweep order."""
    order = list(dict.fromkeys(table["value"]))
    out = (table.groupby(["series", "value", "budget"], sort=False)
           .agg(method=("method", "first"), accuracy=("accuracy", "mean"), std=("accuracy", "std"),
                seeds=("seed", "nunique"), relative_macs=("relative_macs", "mean"))
           .reset_index())
    out["position"] = out["value"].map(order.index)
    return out.sort_values(["series", "budget", "position"]).reset_index(drop=True)


def as_dicts(runs: list[SweepRun]) -> list[dict]:
    return [asdict(run) for run in runs]
