"""Tables that compare methods: accuracy per budget over seeds, and what the scoring stage cost."""

from __future__ import annotations

import pandas as pd

KEYS = ["experiment", "method", "seed", "budget"]


def wide_metrics(metrics: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The tidy metrics table (one row per evaluation and metric) as one row per evaluation with a
    column per metric in ``names``: every asked-for column, also when no row has that metric (a
    CNN-only run has no latency predictions)."""
    part = metrics[metrics["metric"].isin(names)]
    wide = part.pivot_table(index=KEYS, columns="metric", values="value", aggfunc="first").reset_index()
    return wide.reindex(columns=[*KEYS, *names, *[c for c in wide.columns if c not in (*KEYS, *names)]])


def method_table(metrics: pd.DataFrame, experiments: list[str], metric: str = "accuracy") -> pd.DataFrame:
    """One row per (experiment, method, budget): mean and std over seeds of ``metric``, the mean
    recounted relative MACs, measured speed-up (dense / slim) and the latency table's predicted
    speed-up where the model has a table, and how many seeds there are."""
    extra = ["relative_macs", "latency_speedup", "predicted_speedup"]
    part = metrics[metrics["experiment"].isin(experiments)]
    if not (part["metric"] == metric).any():
        return pd.DataFrame(columns=["experiment", "method", "budget", "mean", "std", "seeds", *extra])
    wide = wide_metrics(part, [metric, *extra])
    table = wide.groupby(["experiment", "method", "budget"], sort=False).agg(
        mean=(metric, "mean"), std=(metric, "std"), seeds=("seed", "nunique"), relative_macs=("relative_macs", "mean"),
        latency_speedup=("latency_speedup", "mean"), predicted_speedup=("predicted_speedup", "mean"))
    order = {name: i for i, name in enumerate(experiments)}
    return table.reset_index().sort_values(["experiment", "method", "budget"], key=lambda c: c.map(order) if c.name == "experiment" else c,
                                            kind="stable").reset_index(drop=True)


def speedup_prediction_error(metrics: pd.DataFrame) -> float:
    """Median over evaluations of |predicted - measured| speed-up (those with a table prediction)."""
    wide = wide_metrics(metrics, ["predicted_speedup", "latency_speedup"])
    wide = wide.dropna(subset=["predicted_speedup", "latency_speedup"])
    return float((wide["predicted_speedup"] - wide["latency_speedup"]).abs().median())


def _cell(mean: float, std: float, seeds: int, speedup: float = float("nan")) -> str:
    value = f"{mean:.3f} ± {std:.3f}" if seeds > 1 else f"{mean:.3f}"
    return value if pd.isna(speedup) else f"{value} ({speedup:.2f}×)"


def to_markdown(table: pd.DataFrame, metric: str = "accuracy") -> str:
    """A method x budget grid per experiment ("mean ± std over n seeds" cells)."""
    lines = []
    for experiment, part in table.groupby("experiment", sort=False):
        budgets = sorted(part["budget"].unique())
        seeds = int(part["seeds"].max())
        lines += [f"### {experiment}: test {metric}" + (f" (mean ± std over {seeds} seeds)" if seeds > 1 else "")
                  + " (measured speed-up)", "",
                  "| method | " + " | ".join(f"{b:.2f}" for b in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        for method, rows in part.groupby("method", sort=False):
            by_budget = rows.set_index("budget")
            cells = [_cell(by_budget.at[b, "mean"], by_budget.at[b, "std"], int(by_budget.at[b, "seeds"]),
                           by_budget.at[b, "latency_speedup"] if "latency_speedup" in by_budget else float("nan"))
                     if b in by_budget.index else "" for b in budgets]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def read_benchmark_seconds(path) -> float:
    """Wall seconds of one Snakemake ``benchmark:`` file (its first column, first data row)."""
    return float(pd.read_csv(path, sep="\t")["s"].iloc[0])


def scoring_passes(kind: str, units_scored: int, calibration_size: int, masks_tuned: int = 0,
                   stages: dict | None = None) -> tuple[int, int]:
    """(forward, backward) passes of the pruning stage, by the method's ``scoring_passes``
    (optin.methods.registry): one masked forward of the calibration batch per unit (from the unit's
    layer on: OPTIN), one forward and one backward per calibration sample (Kwon et al., NViT; in
    mini-batches), or none (weight magnitude, random); plus the passes of its per-mask stages."""
    from optin.methods.registry import METHODS

    entry = METHODS[kind]
    forward, backward = {"per_unit": (units_scored, 0), "forward_backward": (calibration_size, calibration_size),
                         "forward": (calibration_size, 0), "none": (0, 0)}[entry.scoring_passes]
    if entry.stage_passes is not None and masks_tuned:
        more_forward, more_backward = entry.stage_passes(stages or {}, calibration_size, masks_tuned)
        forward, backward = forward + more_forward, backward + more_backward
    return forward, backward
