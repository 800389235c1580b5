import pandas as pd
import pytest

from optin.workflow import plots


def synthetic_metrics() -> pd.DataFrame:
    rows = []
    for experiment in ("deit_tiny/imagenet", "dinov2_fmnist/fashion_mnist"):
        for method in ("optin", "optin_tau"):
            for seed in (0, 1):
                for budget in (0.5, 0.6, 0.7):
                    values = {"relative_macs": budget, "accuracy": 0.7 + 0.1 * budget + 0.01 * seed,
                              "unpruned_accuracy": 0.8, "latency_speedup": 1 / budget}
                    rows += [{"experiment": experiment, "method": method, "seed": seed, "budget": budget,
                              "metric": name, "value": value} for name, value in values.items()]
    return pd.DataFrame(rows)


def rendered_twice(tmp_path, draw) -> list:
    """Draw a figure twice: both files exist, are non-empty and byte-identical (no timestamps)."""
    paths, again = draw(tmp_path / "first"), draw(tmp_path / "second")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    return paths


def test_vision_figure_overlays_the_papers_points(tmp_path):
    references = {"deit_tiny/imagenet": "deit_tiny_imagenet", "dinov2_fmnist/fashion_mnist": None}
    rendered_twice(tmp_path, lambda stem: plots.delta_vs_flops(synthetic_metrics(), stem, references, "top-1"))


def test_text_figure_overlays_glue_points_and_the_mnli_latency_curve(tmp_path):
    metrics = synthetic_metrics().replace({"deit_tiny/imagenet": "bert_base_mnli/glue_mnli",
                                           "dinov2_fmnist/fashion_mnist": "bert_base_sst2/glue_sst2"})
    references = {"bert_base_mnli/glue_mnli": "glue_mnli", "bert_base_sst2/glue_sst2": "glue_sst2"}
    rendered_twice(tmp_path / "delta", lambda stem: plots.delta_vs_flops(metrics, stem, references, "accuracy"))
    rendered_twice(tmp_path / "speed", lambda stem: plots.speedup_vs_flops(metrics, stem, "speed-up", references))


def test_published_points_keep_their_provenance():
    points = plots.paper_points("deit_tiny_imagenet")
    assert points["paper_optin"][0] == [0.50, -2.98] and len(points["baselines"]) == 11
    mnli = plots.paper_points("glue_mnli")
    assert mnli["paper_optin"][1] == [0.6, -2.61] and mnli["latency_speedup"][0] == [0.5, 1.356]
    # the README table of the paper: BERT-base at 0.6 of the MACs
    assert {k: plots.paper_points(f"glue_{k}")["accuracy_at_0.6"] for k in ("mnli", "qqp", "qnli", "sst2", "stsb", "mrpc")} == \
        {"mnli": 81.90, "qqp": 90.06, "qnli": 88.49, "sst2": 92.24, "stsb": 87.25, "mrpc": 85.13}
    assert plots.paper_points("glue_mrpc")["baselines"]["Kwon et al. 2022 (PTF)"] == [[0.5, -5.39], [0.6, -3.13], [0.7, -1.71]]
    with pytest.raises(KeyError, match="glue_cola"):
        plots.paper_points("glue_cola")


def synthetic_masks(prune_tokens: bool) -> dict:
    """Two methods x two budgets of a 3-layer model with 4 heads and 8 neurons per layer."""
    masks = {}
    for method in ("optin", "optin_tau" if prune_tokens else "kwon"):
        for budget in (0.5, 0.8):
            keep = int(8 * budget)
            mask = {"budget": budget, "kept": {"head": [[0, 1], [0, 1, 2, 3], []], "neuron": [list(range(keep))] * 3}}
            if prune_tokens and method == "optin_tau":
                mask["tokens_per_layer"] = [17, 15, 9]
            masks[(method, budget)] = mask
    return masks


@pytest.mark.parametrize("prune_tokens", [False, True])
def test_kept_unit_heat_maps_render_deterministically(tmp_path, prune_tokens):
    totals = {"head": [4, 4, 4], "neuron": [8, 8, 8]}
    rendered_twice(tmp_path, lambda stem: plots.kept_units(synthetic_masks(prune_tokens), totals, stem, "units"))
    channels = {("optin", 0.5): {"budget": 0.5, "kept": {"channel": [[0, 1], [3]]}}}
    rendered_twice(tmp_path / "cnn", lambda stem: plots.kept_units(channels, {"channel": [4, 6]}, stem, "channels"))


def test_importance_distributions_render_deterministically_with_zero_scores(tmp_path):
    rows = [{"layer": layer, "kind": kind, "index": i, "importance": 0.0 if i == 0 else (layer + 1) * 10.0 ** -i}
            for layer in range(3) for kind, n in (("head", 4), ("neuron", 8), ("token", 5)) for i in range(n)]
    rendered_twice(tmp_path, lambda stem: plots.importance_distributions(pd.DataFrame(rows), stem, "importance"))


def segmentation_metrics() -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for budget in (0.4, 0.6, 0.8):
            values = {"relative_macs": budget, "whole_network_relative_macs": 0.3 + 0.7 * budget,
                      "miou": 0.6 + 0.2 * budget + 0.01 * seed, "unpruned_miou": 0.8, "pixel_accuracy": 0.95,
                      "latency_speedup": 1 / budget}
            rows += [{"experiment": "m2f/canvases", "method": "optin", "seed": seed, "budget": budget,
                      "metric": name, "value": value} for name, value in values.items()]
    return pd.DataFrame(rows)


def test_segmentation_curve_and_examples_render_deterministically(tmp_path):
    import numpy as np

    both = pd.concat([synthetic_metrics(), segmentation_metrics()])
    paths = plots.miou_vs_flops(both, tmp_path / "miou", "mIoU")
    again = plots.miou_vs_flops(both, tmp_path / "miou_again", "mIoU")
    assert all(p.stat().st_size > 0 for p in paths)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    # Classifier rows have no mIoU and must not break the classifier figure either way round.
    assert all(p.stat().st_size > 0 for p in plots.accuracy_vs_flops(both, tmp_path / "acc", "accuracy"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 16, 16), dtype=np.uint8)
    maps = [rng.integers(0, 3, (2, 16, 16)) for _ in range(3)]
    paths = plots.segmentation_examples(images, *maps, ["background", "a", "b"], tmp_path / "examples", "examples", "pruned")
    assert all(p.stat().st_size > 0 for p in paths)


def test_cnn_figure_renders_each_method_deterministically(tmp_path):
    rows = []
    for method in ("optin", "magnitude"):
        for budget in (0.4, 0.6, 0.8):
            values = {"relative_macs": budget, "accuracy": 0.8 + 0.1 * budget, "unpruned_accuracy": 0.9,
                      "latency_speedup": 1 / budget}
            rows += [{"experiment": "resnet20/fmnist", "method": method, "seed": 0, "budget": budget,
                      "metric": name, "value": value} for name, value in values.items()]
    metrics = pd.concat([synthetic_metrics(), pd.DataFrame(rows)])
    paths = plots.channels_vs_flops(metrics, tmp_path / "cnn", ["resnet20/fmnist"])
    again = plots.channels_vs_flops(metrics, tmp_path / "cnn_again", ["resnet20/fmnist"])
    assert all(p.stat().st_size > 0 for p in paths)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]


def test_method_comparison_table_markdown_and_cost_figure(tmp_path):
    from optin.workflow import tables

    metrics = synthetic_metrics()
    experiments = ["dinov2_fmnist/fashion_mnist", "deit_tiny/imagenet"]
    paths = plots.method_comparison(metrics, tmp_path / "methods", experiments, "methods")
    again = plots.method_comparison(metrics, tmp_path / "methods_again", experiments, "methods")
    assert all(p.stat().st_size > 0 for p in paths)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    table = tables.method_table(metrics, experiments)
    # accuracy = 0.7 + 0.1 b + 0.01 seed over seeds 0 and 1: mean +0.005, std 0.01 / sqrt(2)
    row = table[(table["experiment"] == "deit_tiny/imagenet") & (table["method"] == "optin") & (table["budget"] == 0.6)].iloc[0]
    assert row["mean"] == pytest.approx(0.765) and row["std"] == pytest.approx(0.01 / 2**0.5) and row["seeds"] == 2
    assert list(dict.fromkeys(table["experiment"])) == experiments
    markdown = tables.to_markdown(table)
    # measured speed-up in brackets: 1 / budget here
    assert "| optin_tau | 0.755 ± 0.007 (2.00×) | 0.765 ± 0.007 (1.67×) | 0.775 ± 0.007 (1.43×) |" in markdown
    assert row["latency_speedup"] == pytest.approx(1 / 0.6)
    cost = pd.DataFrame([{"experiment": e, "method": m, "seed": s, "scoring_wall_s": w}
                         for e in experiments for m, w in (("optin", 300.0), ("kwon", 4.0), ("random", 0.5)) for s in (0, 1)])
    paths = plots.scoring_cost(cost, tmp_path / "cost", "cost")
    assert all(p.stat().st_size > 0 for p in paths)


def test_scoring_passes_per_method():
    from optin.workflow.tables import scoring_passes

    assert scoring_passes("optin", 9288, 16) == (9288, 0)
    assert scoring_passes("kwon", 9288, 16) == (16, 16)
    assert scoring_passes("random", 9288, 16) == scoring_passes("magnitude", 9288, 16) == (0, 0)


def test_the_classifier_figures_draw_an_empty_arm(tmp_path):
    """A run of CNN experiments only (docs/own-model.md) leaves the text/vision figures no rows."""
    empty = pd.DataFrame(columns=["experiment", "model", "dataset", "method", "calibration_size", "seed", "budget", "metric", "value"])
    written = [*plots.accuracy_vs_flops(empty, tmp_path / "a", "t"), *plots.speedup_vs_flops(empty, tmp_path / "b", "t", {}),
               *plots.delta_vs_flops(empty, tmp_path / "c", {}, "top-1")]
    assert all(path.stat().st_size > 0 for path in written) and len(written) == 6


def test_a_methods_style_is_a_function_of_its_name():
    from optin.methods.registry import METHODS, names
    from optin.workflow.plots import method_style

    assert method_style("optin") == METHODS["optin"].style == ("#0072B2", "o")
    assert method_style("kwon_tuned") == METHODS["kwon"].variants["kwon_tuned"].style
    assert method_style("my_new_method") == method_style("my_new_method")   # no plotting-order dependence
    # every method and variant the registry names is told apart by colour or marker
    assert len(names()) >= 15 and len({method_style(name) for name in names()}) == len(names())


def test_a_latency_budgeted_method_keeps_its_methods_colour_and_marker_on_a_dashed_line():
    from optin.workflow.plots import method_linestyle

    from optin.workflow.plots import method_style

    assert method_style("kwon_latency") == method_style("kwon") and method_style("nvit_latency") == method_style("nvit")
    assert method_linestyle("optin_latency") == "--" and method_linestyle("optin") == "-"
    assert len({method_style(m) for m in ("optin", "kwon", "nvit", "magnitude", "random")}) == 5


def test_accuracy_vs_speedup_figure_and_the_tables_prediction_error(tmp_path):
    from optin.workflow import tables

    metrics = synthetic_metrics()
    # the table over-predicts the speed-up by 0.1 at every budget; no prediction for optin_tau (merged tokens)
    predicted = metrics[(metrics["metric"] == "latency_speedup") & (metrics["method"] == "optin")].assign(
        metric="predicted_speedup", value=lambda d: d["value"] + 0.1)
    metrics = pd.concat([metrics, predicted, predicted.assign(method="optin_latency")], ignore_index=True)
    assert tables.speedup_prediction_error(metrics) == pytest.approx(0.1)
    experiments = ["deit_tiny/imagenet", "dinov2_fmnist/fashion_mnist"]
    rendered_twice(tmp_path, lambda stem: plots.accuracy_vs_speedup(metrics, stem, experiments, "t"))


def test_every_method_figure_draws_a_method_in_its_own_colour_and_marker_whatever_the_panel(tmp_path, monkeypatch):
    """The same method in different panels and figures, next to different other methods and in a
    different order, always gets method_style(name): read back from the drawn matplotlib artists."""
    from matplotlib.colors import to_hex

    figures = []
    real_save = plots.save
    monkeypatch.setattr(plots, "save", lambda fig, stem: figures.append(fig) or real_save(fig, stem))
    rows = []
    for experiment, methods in (("a/x", ("random", "optin", "kwon")), ("b/y", ("kwon", "optin_latency", "magnitude", "optin"))):
        for method in methods:
            for budget in (0.5, 0.7):
                values = {"relative_macs": budget, "accuracy": 0.7 + 0.1 * budget, "unpruned_accuracy": 0.8,
                          "latency_speedup": 1 / budget, "predicted_speedup": 1 / budget, "miou": 0.5,
                          "unpruned_miou": 0.6, "whole_network_relative_macs": budget, "pixel_accuracy": 0.7}
                rows += [{"experiment": experiment, "method": method, "seed": 0, "budget": budget, "metric": name,
                          "value": value} for name, value in values.items()]
    metrics, experiments = pd.DataFrame(rows), ["a/x", "b/y"]
    plots.accuracy_vs_flops(metrics, tmp_path / "1", "t")
    plots.speedup_vs_flops(metrics, tmp_path / "2", "t", {})
    plots.delta_vs_flops(metrics, tmp_path / "3", dict.fromkeys(experiments), "top-1")
    plots.method_comparison(metrics, tmp_path / "4", experiments, "t")
    plots.channels_vs_flops(metrics, tmp_path / "5", experiments)
    plots.accuracy_vs_speedup(metrics, tmp_path / "6", experiments, "t")
    plots.miou_vs_flops(metrics, tmp_path / "7", "t")
    cost = pd.DataFrame([{"experiment": e, "method": m, "seed": 0, "scoring_wall_s": 1.0}
                         for e in experiments for m in metrics[metrics["experiment"] == e]["method"].unique()])
    plots.scoring_cost(cost, tmp_path / "8", "t")
    names = {"random", "optin", "kwon", "optin_latency", "magnitude"}
    drawn = []   # (figure, method, colour, marker) of every curve whose label starts with a method name
    for number, fig in enumerate(figures):
        for ax in fig.axes:
            # an error-bar curve's label sits on its container, the data line being its first line
            labelled = [(line.get_label(), line) for line in ax.get_lines()]
            labelled += [(c.get_label(), c.lines[0]) for c in ax.containers if hasattr(c, "has_yerr")]
            for label, line in labelled:
                method = label.split(" ")[0].rstrip(":")
                if method in names:
                    drawn.append((number, method, to_hex(line.get_color()), line.get_marker()))
            bars = [c for c in ax.containers if not hasattr(c, "has_yerr")]
            for bar in bars:   # the scoring-cost figure: one bar per method, named by its tick
                for patch, tick in zip(bar.patches, ax.get_xticklabels(), strict=True):
                    drawn.append((number, tick.get_text(), to_hex(patch.get_facecolor()), None))
    assert {figure for figure, *_ in drawn} == set(range(len(figures))) and len(figures) == 8   # every figure drew methods
    assert {method for _, method, _, _ in drawn} == names
    for _, method, colour, marker in drawn:
        expected_colour, expected_marker = plots.method_style(method)
        assert colour == to_hex(expected_colour) and marker in (expected_marker, None), method
