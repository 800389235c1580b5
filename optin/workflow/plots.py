"""Figures from the tidy metrics table; deterministic files (no timestamps in metadata)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from optin.methods import registry  # noqa: E402
from optin.workflow import tables  # noqa: E402

STYLE = Path(__file__).with_name("optin.mplstyle")
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None, "Producer": None}}


# A method searched under a latency budget is named <method>_latency: its method's colour and marker,
# a dashed line.
LATENCY_SUFFIX = "_latency"


def method_style(name: str) -> tuple[str, str]:
    """(colour, marker) of a method: fixed for the known names, else drawn from the palette by a
    stable hash of the name (never by plotting order)."""
    name = name.removesuffix(LATENCY_SUFFIX)
    if registry.style(name) is not None:
        return registry.style(name)
    import zlib

    code = zlib.crc32(name.encode())
    return PALETTE[code % len(PALETTE)], "os^vDPX*"[(code // len(PALETTE)) % 8]


def method_linestyle(name: str) -> str:
    return "--" if name.endswith(LATENCY_SUFFIX) else "-"


def save(fig, stem: Path) -> list[Path]:
    """Write stem.png and stem.pdf without timestamps, so reruns are byte-identical."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, metadata=METADATA[ext])
        paths.append(path)
    plt.close(fig)
    return paths


def _experiment_panels(experiments: list[str], height: float = 3.6):
    """A figure with one panel per experiment (at least one), side by side: a method keeps its
    colour and marker (method_style) in every panel, so experiments never share an axis."""
    columns = max(1, len(experiments))
    fig, axes = plt.subplots(1, columns, figsize=(4.2 * columns, height), squeeze=False)
    return fig, list(axes[0])


def _method_curve(ax, curve: pd.DataFrame, method: str, scale: float = 100.0, **kwargs) -> None:
    """A method's mean curve with error bars, in its colour, marker and line style."""
    colour, marker = method_style(method)
    ax.errorbar(curve["x"], scale * curve["y"], yerr=scale * curve["err"].fillna(0.0), marker=marker, color=colour,
                linestyle=method_linestyle(method), capsize=2, **kwargs)


def accuracy_vs_flops(metrics: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    data = tables.wide_metrics(metrics, ["relative_macs", "accuracy", "unpruned_accuracy"])
    data = data.dropna(subset=["accuracy"]) if "accuracy" in data else data  # segmentation rows report mIoU
    experiments = list(dict.fromkeys(data["experiment"]))
    with plt.style.context(STYLE):
        fig, axes = _experiment_panels(experiments)
        for ax, experiment in zip(axes, experiments):
            part = data[data["experiment"] == experiment]
            for method, group in part.groupby("method"):
                curve = group.groupby("budget").agg(x=("relative_macs", "mean"), y=("accuracy", "mean"),
                                                   err=("accuracy", "std")).sort_values("x")
                _method_curve(ax, curve, method, label=method)
            _accuracy_panel(ax, part, experiment, "relative FLOPs (MACs kept / unpruned)")
            bottom, top = ax.get_ylim()  # keep the unpruned line inside the axes
            ax.set_ylim(bottom, max(top, 100 * part["unpruned_accuracy"].max() + 0.5))
        fig.suptitle(title, fontsize="small")
        return save(fig, stem)


def speedup_vs_flops(metrics: pd.DataFrame, stem: Path, title: str,
                     references: dict[str, str | None] | None = None) -> list[Path]:
    """Measured speed-up of the slim model against the ideal 1 / FLOPs, one panel per experiment; the
    paper's latency points (BERT-base MNLI) where the experiment names a reference that has them."""
    data = tables.wide_metrics(metrics, ["relative_macs", "latency_speedup"])
    experiments = list(dict.fromkeys(data["experiment"]))
    with plt.style.context(STYLE):
        fig, axes = _experiment_panels(experiments)
        for ax, experiment in zip(axes, experiments):
            part = data[data["experiment"] == experiment]
            xs = sorted(part["relative_macs"].dropna().unique())
            if xs:
                grid = [min(xs) + (1.0 - min(xs)) * i / 50 for i in range(51)]
                ax.plot(grid, [1 / x for x in grid], color="0.5", linestyle="--", label="ideal 1 / FLOPs")
            for method, group in part.groupby("method"):
                curve = group.groupby("budget").agg(x=("relative_macs", "mean"), y=("latency_speedup", "mean")).sort_values("x")
                colour, marker = method_style(method)
                ax.plot(curve["x"], curve["y"], marker=marker, color=colour, linestyle=method_linestyle(method), label=method)
            key = (references or {}).get(experiment)
            points = paper_points(key) if key else {}
            if points.get("latency_speedup"):
                px, py = zip(*points["latency_speedup"])
                ax.plot(px, py, color="0.3", linestyle="--", marker="s", markerfacecolor="none",
                        label=f"OPTIN {points['model']} {key} (paper, hardware {points['latency_hardware']})")
            ax.axhline(1.0, color="0.8", linewidth=1)
            ax.set_title(experiment, fontsize="small")
            ax.set_xlabel("relative FLOPs (MACs kept / unpruned)")
            ax.set_ylabel("measured speed-up (dense / slim)")
            ax.legend(fontsize="x-small")
        fig.suptitle(title, fontsize="small")
        return save(fig, stem)


def paper_points(key: str) -> dict:
    """Published points (optin/reference/paper_points.json, with provenance)."""
    import json

    data = json.loads(Path(__file__).parents[1].joinpath("reference").joinpath("paper_points.json").read_text())
    if key not in data:
        raise KeyError(f"no published reference points {key!r}; known: {sorted(k for k in data if not k.startswith('_'))}")
    return data[key]


MARKERS = ["s", "^", "v", "D", "P", "X", "<", ">", "p", "h", "*"]


def delta_vs_flops(metrics: pd.DataFrame, stem: Path, references: dict[str, str | None], metric: str) -> list[Path]:
    """Change of the task metric vs relative FLOPs, every method, one panel per experiment (the paper's
    Fig. 2 for GLUE, its DeiT-Ti plot for ImageNet); the paper's OPTIN curve and baselines as grey
    markers where an experiment names published reference points."""
    data = tables.wide_metrics(metrics, ["relative_macs", "accuracy", "unpruned_accuracy"])
    experiments = list(references)
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, max(1, len(experiments)), figsize=(4.2 * max(1, len(experiments)), 3.4), squeeze=False)
        for ax, experiment in zip(axes[0], experiments):
            part = data[data["experiment"] == experiment] if "accuracy" in data else data.iloc[0:0]
            for method, group in part.groupby("method"):
                curve = group.assign(delta=100 * (group["accuracy"] - group["unpruned_accuracy"])).groupby("budget").agg(
                    x=("relative_macs", "mean"), y=("delta", "mean"), err=("delta", "std")).sort_values("x")
                _method_curve(ax, curve, method, scale=1.0, label=f"{method} (this run)")
            reference = references[experiment]
            if reference:
                points = paper_points(reference)
                if points["paper_optin"]:
                    xs, ys = zip(*points["paper_optin"])
                    ax.plot(xs, ys, color="0.3", linestyle="--", marker="o", markerfacecolor="none", label="OPTIN (paper)")
                for marker, (name, values) in zip(MARKERS, sorted(points["baselines"].items())):
                    bx, by = zip(*values)
                    ax.scatter(bx, by, marker=marker, color="0.55", s=22, label=f"{name} (paper)")
                ax.set_title(f"{experiment} vs published {points['model']} points", fontsize="small")
            else:
                ax.set_title(f"{experiment} (default model, no published points)", fontsize="small")
            ax.axhline(0.0, color="0.8", linewidth=1)
            ax.set_xlabel("relative FLOPs (MACs kept / unpruned)")
            ax.set_ylabel(f"change in {metric} (points)")
            ax.legend(fontsize="x-small", ncol=2 if reference and len(points["baselines"]) > 3 else 1)
        return save(fig, stem)


def kept_units(masks: dict[tuple[str, float], dict], totals: dict[str, list[int]], stem: Path, title: str) -> list[Path]:
    """Heat maps of the fraction of units kept per layer (columns) and budget (rows), one row of
    panels per method, one panel per unit kind (heads, neurons, tokens, channels).

    masks: (method, budget) -> the solve rule's mask file; totals: kind -> units per layer."""
    methods = list(dict.fromkeys(method for method, _ in masks))
    kinds = list(totals) + (["token"] if any("tokens_per_layer" in m for m in masks.values()) else [])
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(len(methods), len(kinds), figsize=(2.9 * len(kinds) + 0.8, 2.0 * len(methods) + 0.9),
                                 squeeze=False)
        fig.subplots_adjust(hspace=0.55, wspace=0.3)
        for row, method in enumerate(methods):
            budgets = sorted(b for m, b in masks if m == method)
            for col, kind in enumerate(kinds):
                ax = axes[row][col]
                grid = []
                for budget in budgets:
                    mask = masks[(method, budget)]
                    if kind == "token":
                        counts = mask.get("tokens_per_layer") or [1.0] * len(mask["kept"]["head"])
                        grid.append([c / counts[0] for c in counts])
                    else:
                        grid.append([len(k) / t if t else 1.0 for k, t in zip(mask["kept"][kind], totals[kind])])
                image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest")
                ax.set_yticks(range(len(budgets)), [f"{b:.2f}" for b in budgets], fontsize="x-small")
                ax.set_xticks(range(len(grid[0])), range(len(grid[0])), fontsize="x-small")
                ax.grid(False)
                ax.set_title(f"{method}: {kind}s kept", fontsize="x-small")
                if col == 0:
                    ax.set_ylabel("MACs kept", fontsize="x-small")
                if row == len(methods) - 1:
                    ax.set_xlabel("layer", fontsize="x-small")
        fig.colorbar(image, ax=axes, shrink=0.8, label="fraction kept")
        fig.suptitle(title, fontsize="small")
        return save(fig, stem)


def importance_distributions(scores: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Box plots of log10 importance per layer, one panel per unit kind: where the scores put the
    important units, and how far apart layers are (the search ranks all layers together)."""
    import numpy as np

    kinds = list(dict.fromkeys(scores["kind"]))
    positive = scores["importance"][scores["importance"] > 0]
    floor = float(positive.min()) / 10 if len(positive) else 1e-12
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, len(kinds), figsize=(3.4 * len(kinds), 3.2), squeeze=False)
        fig.subplots_adjust(wspace=0.35, top=0.82)
        for ax, kind in zip(axes[0], kinds):
            part = scores[scores["kind"] == kind]
            layers = sorted(part["layer"].unique())
            values = [np.log10(np.maximum(part[part["layer"] == layer]["importance"].to_numpy(), floor)) for layer in layers]
            ax.boxplot(values, positions=layers, widths=0.6, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": PALETTE[0], "alpha": 0.5}, medianprops={"color": PALETTE[3]})
            ax.set_xlabel("layer")
            ax.set_ylabel("log10 importance")
            ax.set_title(f"{kind}s ({len(part)})", fontsize="small")
        fig.suptitle(title, fontsize="small")
        return save(fig, stem)


def miou_vs_flops(metrics: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Segmentation arm, one panel per experiment: mIoU and pixel accuracy vs relative FLOPs, against
    the backbone's prunable MACs (solid) and the whole network's (hollow: decoders, patch embedding and
    merging as fixed cost)."""
    data = tables.wide_metrics(metrics, ["relative_macs", "whole_network_relative_macs", "miou", "unpruned_miou", "pixel_accuracy"])
    data = data.dropna(subset=["miou"]) if "miou" in data else data.iloc[0:0]
    experiments = list(dict.fromkeys(data["experiment"]))
    with plt.style.context(STYLE):
        fig, axes = _experiment_panels(experiments)
        for ax, experiment in zip(axes, experiments):
            part = data[data["experiment"] == experiment]
            for method, group in part.groupby("method"):
                colour, marker = method_style(method)
                curve = group.groupby("budget").agg(
                    x=("relative_macs", "mean"), whole=("whole_network_relative_macs", "mean"), y=("miou", "mean"),
                    err=("miou", "std"), pixel=("pixel_accuracy", "mean")).sort_values("x")
                _method_curve(ax, curve, method, label=f"{method}: mIoU")
                ax.plot(curve["whole"], 100 * curve["y"], marker=marker, markerfacecolor="none", linestyle=":", color=colour,
                        label=f"{method}: mIoU vs whole-network FLOPs")
                ax.plot(curve["x"], 100 * curve["pixel"], marker=marker, linestyle="--", color=colour, alpha=0.6,
                        label=f"{method}: pixel accuracy")
            if not part.empty:
                ax.axhline(100 * part["unpruned_miou"].iloc[0], color="0.4", linestyle="-.", linewidth=1, label="unpruned mIoU")
            ax.set_title(experiment, fontsize="small")
            ax.set_xlabel("relative FLOPs (MACs kept / unpruned)")
            ax.set_ylabel("test mIoU / pixel accuracy (%)")
            ax.legend(fontsize="x-small")
        fig.suptitle(title, fontsize="small")
        return save(fig, stem)


def segmentation_examples(images, truth, unpruned, pruned, class_names: list[str], stem: Path, title: str,
                          pruned_label: str) -> list[Path]:
    """Rows of (image, ground truth, unpruned prediction, pruned prediction), the paper's qualitative pair."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = ["#FFFFFF"] + PALETTE[: len(class_names) - 1] if len(class_names) <= len(PALETTE) + 1 else None
    cmap = ListedColormap(colours) if colours else plt.get_cmap("tab20", len(class_names))
    columns = [("image", images), ("ground truth", truth), ("unpruned", unpruned), (pruned_label, pruned)]
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(len(images), 4, figsize=(6.4, 1.7 * len(images) + 0.6), squeeze=False)
        for row in range(len(images)):
            for col, (name, maps) in enumerate(columns):
                ax = axes[row][col]
                if col == 0:
                    ax.imshow(maps[row], cmap="gray", interpolation="nearest")
                else:
                    # Ignored pixels (255) show as the background colour.
                    ax.imshow(maps[row], cmap=cmap, vmin=-0.5, vmax=len(class_names) - 0.5, interpolation="nearest")
                ax.set_axis_off()
                if row == 0:
                    ax.set_title(name, fontsize="small")
        fig.legend(handles=[Patch(facecolor=cmap(i), edgecolor="0.6", label=name) for i, name in enumerate(class_names)],
                   loc="lower center", ncol=min(len(class_names), 5), fontsize="x-small", frameon=False)
        fig.suptitle(title, fontsize="small")
        fig.subplots_adjust(bottom=0.12)
        return save(fig, stem)


def channels_vs_flops(metrics: pd.DataFrame, stem: Path, experiments: list[str]) -> list[Path]:
    """CNN arm: test accuracy vs relative (whole-network) FLOPs, one panel per experiment, every method
    (OPTIN against the magnitude baseline) at the same budgets, with the measured speed-up beneath."""
    data = tables.wide_metrics(metrics, ["relative_macs", "accuracy", "unpruned_accuracy", "latency_speedup"])
    with plt.style.context(STYLE):
        columns = max(1, len(experiments))
        fig, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 5.2), squeeze=False, sharex="col",
                                 gridspec_kw={"height_ratios": [2, 1]})
        for col, experiment in enumerate(experiments):
            top, bottom = axes[0][col], axes[1][col]
            part = data[data["experiment"] == experiment]
            for method, group in part.groupby("method"):
                curve = group.groupby("budget").agg(x=("relative_macs", "mean"), y=("accuracy", "mean"),
                                                   err=("accuracy", "std"), speed=("latency_speedup", "mean")).sort_values("x")
                _method_curve(top, curve, method, label=method)
                colour, marker = method_style(method)
                bottom.plot(curve["x"], curve["speed"], marker=marker, color=colour, linestyle=method_linestyle(method), label=method)
            if not part.empty:
                top.axhline(100 * part["unpruned_accuracy"].iloc[0], color="0.4", linestyle=":", linewidth=1, label="unpruned")
                xs = sorted(part["relative_macs"].unique())
                bottom.plot(xs, [1 / x for x in xs], color="0.5", linestyle="--", label="ideal 1 / FLOPs")
            top.set_title(experiment, fontsize="small")
            top.set_ylabel("test accuracy (%)")
            top.legend(fontsize="x-small")
            bottom.axhline(1.0, color="0.8", linewidth=1)
            bottom.set_xlabel("relative FLOPs (whole network)")
            bottom.set_ylabel("CPU speed-up")
        fig.suptitle("CNN channel pruning at equal MACs", fontsize="small")
        return save(fig, stem)


def _accuracy_panel(ax, part: pd.DataFrame, experiment: str, xlabel: str) -> None:
    """An experiment's accuracy panel around its curves: the unpruned accuracy, title, axes, legend."""
    if not part.empty:
        ax.axhline(100 * part["unpruned_accuracy"].iloc[0], color="0.4", linestyle=":", linewidth=1, label="unpruned")
    ax.set_title(experiment, fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize="x-small")


def method_comparison(metrics: pd.DataFrame, stem: Path, experiments: list[str], title: str) -> list[Path]:
    """Accuracy vs relative FLOPs, one panel per experiment, one line per method: the mean over seeds
    with a band of ± one standard deviation (no band with one seed)."""
    data = tables.wide_metrics(metrics, ["relative_macs", "accuracy", "unpruned_accuracy"])
    data = data.dropna(subset=["accuracy"]) if "accuracy" in data else data.iloc[0:0]
    columns = max(1, len(experiments))
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, columns, figsize=(4.2 * columns, 3.6), squeeze=False)
        for ax, experiment in zip(axes[0], experiments):
            part = data[data["experiment"] == experiment]
            for method, group in part.groupby("method", sort=False):
                curve = group.groupby("budget").agg(x=("relative_macs", "mean"), y=("accuracy", "mean"),
                                                   err=("accuracy", "std"), seeds=("seed", "nunique")).sort_values("x")
                seeds = int(curve["seeds"].min())
                color, marker = method_style(method)
                ax.plot(curve["x"], 100 * curve["y"], marker=marker, color=color, linestyle=method_linestyle(method),
                        label=f"{method} ({seeds} seed{'s' if seeds > 1 else ''})")
                if seeds > 1:
                    err = 100 * curve["err"].fillna(0.0)
                    ax.fill_between(curve["x"], 100 * curve["y"] - err, 100 * curve["y"] + err, color=color, alpha=0.2,
                                    linewidth=0)
            _accuracy_panel(ax, part, experiment, "relative FLOPs (MACs kept / unpruned)")
        fig.suptitle(title, fontsize="small")
        return save(fig, stem)


def scoring_cost(cost: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Wall time of the scoring stage per method (mean over seeds), one group of bars per experiment."""
    summary = cost.groupby(["experiment", "method"], sort=False)["scoring_wall_s"].agg(["mean", "std"]).reset_index()
    experiments = list(dict.fromkeys(summary["experiment"]))
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, max(1, len(experiments)), figsize=(3.4 * max(1, len(experiments)), 3.0), squeeze=False)
        for ax, experiment in zip(axes[0], experiments):
            part = summary[summary["experiment"] == experiment]
            ax.bar(range(len(part)), part["mean"], yerr=part["std"].fillna(0.0), color=[method_style(m)[0] for m in part["method"]],
                   capsize=2)
            ax.set_xticks(range(len(part)), part["method"], rotation=30, ha="right", fontsize="x-small")
            ax.set_yscale("symlog", linthresh=1.0)
            ax.set_ylabel("scoring wall time (s, 2 CPU threads)")
            ax.set_title(experiment, fontsize="small")
        fig.suptitle(title, fontsize="small")
        return save(fig, stem)


def sweep(summary: pd.DataFrame, stem: Path, title: str, axis: str, unpruned: float) -> list[Path]:
    """Accuracy against a swept value (optin.workflow.sweeps.summary): one line per (series, budget), in the
    series' method style (a calibration sweep) or coloured by budget (a method sweep, whose x is the
    method), line style by budget, a band of ± one std over seeds."""
    values = list(dict.fromkeys(summary.sort_values("position")["value"]))
    budgets = sorted(set(summary["budget"]))
    with plt.style.context(STYLE):
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        for (series, budget), line in summary.groupby(["series", "budget"], sort=False):
            line = line.sort_values("position")
            colour, marker = method_style(series) if series else (PALETTE[budgets.index(budget) % len(PALETTE)], "o")
            seeds = int(line["seeds"].min())
            label = f"{series + ' ' if series else ''}at {budget:g} of the MACs ({seeds} seed{'s' if seeds > 1 else ''})"
            ax.plot(line["position"], 100 * line["accuracy"], marker=marker, color=colour,
                    linestyle=["-", "--", ":", "-."][budgets.index(budget) % 4], label=label)
            if seeds > 1:
                err = 100 * line["std"].fillna(0.0)
                ax.fill_between(line["position"], 100 * line["accuracy"] - err, 100 * line["accuracy"] + err,
                                color=colour, alpha=0.2, linewidth=0)
        ax.axhline(100 * unpruned, color="0.4", linestyle=":", linewidth=1, label="unpruned")
        ax.set_xticks(range(len(values)), values, rotation=20 if max(map(len, values)) > 6 else 0, fontsize="small")
        ax.set_xlabel(axis)
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize="x-small")
        ax.set_title(title, fontsize="small")
        return save(fig, stem)


def llm_quality_vs_macs(table: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Perplexity (one panel per context; geometric mean over seeds, error bars x/÷ the geometric
    standard deviation: seeds spread over orders of magnitude) and zero-shot accuracy (mean +- std)
    against relative MACs per method; the dense model's values as dotted lines."""
    import numpy as np

    metrics = [c for c in table.columns if c.startswith("perplexity_ctx")] + ["zero_shot_accuracy"]
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=True):
            log_scale = metric.startswith("perplexity")
            for method, group in table.groupby("method", sort=True):
                colour, marker = method_style(method)
                values = np.log(group[metric]) if log_scale else group[metric]
                curve = group.assign(v=values).groupby("budget").agg(x=("relative_macs", "mean"), y=("v", "mean"),
                                                                     err=("v", "std"), n=("v", "size")).reset_index()
                err = curve["err"].fillna(0.0)
                if log_scale:
                    y = np.exp(curve["y"])
                    yerr = [y - np.exp(curve["y"] - err), np.exp(curve["y"] + err) - y]
                else:
                    y, yerr = curve["y"], err
                ax.errorbar(curve["x"], y, yerr=yerr, marker=marker, color=colour, capsize=2,
                            linestyle="--" if method in registry.variant_names() else "-", label=f"{method} (n={int(curve['n'].max())})")
            ax.axhline(table[f"dense_{metric}"].iloc[0], color="0.5", linestyle=":", linewidth=1, label="dense")
            if log_scale:
                ax.set_yscale("log")
            ax.set_xlabel("relative MACs (decoder layers)")
            ax.set_ylabel(metric.replace("_", " "))
        axes[0][0].legend(fontsize=7)
        fig.suptitle(title)
        fig.tight_layout()
        return save(fig, stem)


def accuracy_vs_speedup(metrics: pd.DataFrame, stem: Path, experiments: list[str], title: str) -> list[Path]:
    """Per experiment, accuracy against the measured speed-up (dense / slim), MAC-budgeted masks
    solid and latency-budgeted ones (``*_latency``) dashed; last panel, the latency table's
    predicted speed-up against the measured one, with its median absolute error."""
    data = tables.wide_metrics(metrics, ["latency_speedup", "accuracy", "unpruned_accuracy", "predicted_speedup"])
    data = data[data["experiment"].isin(experiments)].dropna(subset=["accuracy", "latency_speedup"])
    columns = len(experiments) + 1
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, columns, figsize=(4.2 * columns, 3.6), squeeze=False)
        for ax, experiment in zip(axes[0], experiments):
            part = data[data["experiment"] == experiment]
            for method, group in part.groupby("method", sort=True):
                colour, marker = method_style(method)
                # in budget order: a measured speed-up that does not grow with the budget shows as a kink
                curve = group.groupby("budget").agg(x=("latency_speedup", "mean"), y=("accuracy", "mean")).sort_index()
                ax.plot(curve["x"], 100 * curve["y"], marker=marker, color=colour, linestyle=method_linestyle(method), label=method)
            _accuracy_panel(ax, part, experiment, "measured speed-up (dense / slim)")
        ax = axes[0][-1]
        paired = data.dropna(subset=["predicted_speedup"])
        for method, group in paired.groupby("method", sort=True):
            colour, marker = method_style(method)
            ax.scatter(group["predicted_speedup"], group["latency_speedup"], color=colour, marker=marker,
                       facecolors="none" if method.endswith(LATENCY_SUFFIX) else colour, label=method)
        if not paired.empty:
            low = min(paired["predicted_speedup"].min(), paired["latency_speedup"].min(), 1.0)
            high = max(paired["predicted_speedup"].max(), paired["latency_speedup"].max())
            ax.plot([low, high], [low, high], color="0.5", linestyle=":", linewidth=1)
            error = tables.speedup_prediction_error(metrics[metrics["experiment"].isin(experiments)])
            ax.set_title(f"latency table: median |predicted - measured| = {error:.3f}", fontsize="small")
            ax.legend(fontsize="x-small")
        ax.set_xlabel("predicted speed-up (latency table)")
        ax.set_ylabel("measured speed-up")
        fig.suptitle(title, fontsize="small")
        return save(fig, stem)
