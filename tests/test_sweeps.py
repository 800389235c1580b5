import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from optin.workflow.config import ConfigError, check
from optin.workflow.config import sweep_errors
from optin.workflow.sweeps import sweep_runs, sweep_table, summary

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def with_sweeps(sweeps: dict, methods: dict | None = None) -> dict:
    config = copy.deepcopy(DEFAULT)
    config["sweeps"] = sweeps
    config["methods"].update(methods or {})
    return config


CALIBRATION = {"experiment": "minilm_rt", "axis": "sentences", "calibration_n": [8, 16], "methods": ["optin", "kwon"]}
POINTS = {"experiment": "vit_fmnist", "axis": "lambda_c",
          "points": [{"value": "MD only", "method": "md_only"}, {"value": 0.1, "method": "optin"}], "budgets": [0.6]}


def test_a_calibration_sweep_runs_every_size_for_every_method_seed_and_budget():
    config = with_sweeps({"size": CALIBRATION})
    config["experiments"]["minilm_rt"]["seeds"] = [0, 1]
    runs = sweep_runs(config, "size")
    assert len(runs) == 2 * 2 * 2 * 2  # sizes x methods x seeds x default budgets (0.5, 0.7)
    assert {(r.n, r.series, r.method) for r in runs} == {(n, m, m) for n in (8, 16) for m in ("optin", "kwon")}
    assert {r.budget for r in runs} == {0.5, 0.7} and {r.seed for r in runs} == {0, 1}
    assert {r.value for r in runs} == {8, 16}


def test_a_points_sweep_keeps_the_experiments_calibration_size_and_one_series():
    config = with_sweeps({"lam": POINTS}, {"md_only": {"semantics": "paper", "lambda_c": 0.0}})
    runs = sweep_runs(config, "lam")
    assert [(r.value, r.method, r.budget) for r in runs] == [("MD only", "md_only", 0.6), (0.1, "optin", 0.6)]
    assert {r.n for r in runs} == {DEFAULT["experiments"]["vit_fmnist"]["calibration_n"]} and {r.series for r in runs} == {""}
    check(config, base_dir=ROOT)  # valid as a whole


@pytest.mark.parametrize("change, message", [
    ({"experiment": "nope"}, "sweeps.s.experiment: unknown experiment 'nope'"),
    ({"points": [{"value": 1, "method": "optin"}, {"value": 2, "method": "optin"}]}, "give either points"),
    ({"calibration_n": None, "methods": None}, "give either points"),
    ({"methods": ["optin", "nope"]}, "sweeps.s: unknown method 'nope'"),
    ({"calibration_n": [8, 8]}, "repeated value"),
    ({"calibration_n": [8, 65]}, "need 130 rows but datasets.rt_polarity.split.calib_pool is 128"),
    ({"methods": None}, "a calibration_n sweep needs the methods"),
])
def test_bad_sweeps_name_the_key(change, message):
    sweep = {**CALIBRATION, **change}
    sweep = {k: v for k, v in sweep.items() if v is not None}
    errors = sweep_errors(with_sweeps({"s": sweep}))
    assert any(message in e for e in errors), errors


def test_a_method_the_experiments_family_cannot_run_is_a_config_error():
    config = with_sweeps({"s": {"experiment": "resnet20_fmnist", "axis": "x",
                                "points": [{"value": "a", "method": "optin"}, {"value": "b", "method": "kwon"}]}})
    with pytest.raises(ConfigError, match=r"sweeps\.s: method 'kwon': method kind 'kwon' applies to families \['bert', 'vit'\], not to a cifar_resnet"):
        check(config, base_dir=ROOT)


def test_sweep_table_and_summary_match_hand_means():
    runs = [{"value": v, "series": "", "method": m, "n": 4, "seed": s, "budget": 0.5}
            for v, m in (("MD only", "md"), ("0.1", "optin")) for s in (0, 1)]
    accuracies = [0.70, 0.74, 0.80, 0.80]
    metrics = [{"accuracy": a, "relative_macs": 0.49, "unpruned_accuracy": 0.9} for a in accuracies]
    table = sweep_table(runs, metrics)
    assert list(table["accuracy"]) == accuracies
    out = summary(table)
    assert list(out["value"]) == ["MD only", "0.1"]  # sweep order, not sorted
    assert out["accuracy"].tolist() == pytest.approx([0.72, 0.80])
    assert out["std"].tolist() == pytest.approx([pd.Series([0.70, 0.74]).std(), 0.0])
    assert out["seeds"].tolist() == [2, 2]
    with pytest.raises(ValueError, match="4 sweep runs but 3 evaluations"):
        sweep_table(runs, metrics[:3])


def test_sweep_figure_writes_png_and_pdf(tmp_path):
    from optin.workflow import plots

    table = sweep_table([{"value": n, "series": m, "method": m, "n": n, "seed": 0, "budget": b}
                         for n in (4, 8) for m in ("optin", "kwon") for b in (0.5, 0.7)],
                        [{"accuracy": 0.7, "relative_macs": 0.5, "unpruned_accuracy": 0.8}] * 8)
    paths = plots.sweep(summary(table), tmp_path / "s", "title", "sentences", 0.8)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
