import pandas as pd

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
