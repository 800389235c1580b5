import pandas as pd
import pytest

from optin import plots


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


def test_vision_figure_overlays_the_papers_points(tmp_path):
    references = {"deit_tiny/imagenet": "deit_tiny_imagenet", "dinov2_fmnist/fashion_mnist": None}
    paths = plots.delta_top1_vs_flops(synthetic_metrics(), tmp_path / "delta", references)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    again = plots.delta_top1_vs_flops(synthetic_metrics(), tmp_path / "again", references)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]  # no timestamps


def test_published_points_keep_their_provenance():
    points = plots.paper_points("deit_tiny_imagenet")
    assert points["optin"][0] == [0.50, -2.98] and len(points["baselines"]) == 11


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
    from optin import tables

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
    assert "| optin_tau | 0.755 ± 0.007 | 0.765 ± 0.007 | 0.775 ± 0.007 |" in markdown
    cost = pd.DataFrame([{"experiment": e, "method": m, "seed": s, "scoring_wall_s": w}
                         for e in experiments for m, w in (("optin", 300.0), ("kwon", 4.0), ("random", 0.5)) for s in (0, 1)])
    paths = plots.scoring_cost(cost, tmp_path / "cost", "cost")
    assert all(p.stat().st_size > 0 for p in paths)


def test_scoring_passes_per_method():
    from optin.tables import scoring_passes

    assert scoring_passes("optin", 9288, 16) == (9288, 0)
    assert scoring_passes("kwon", 9288, 16) == (16, 16)
    assert scoring_passes("random", 9288, 16) == scoring_passes("magnitude", 9288, 16) == (0, 0)
