import numpy as np
import pandas as pd
import pytest

from optin.engine.settings import OptinMethod



from optin.methods.optin import combine, dynamic_kl_scaling


def test_unknown_method_setting_is_named():
    with pytest.raises(ValueError, match="md_rowz"):
        OptinMethod.from_config({"semantics": "paper", "md_rowz": 5})
    with pytest.raises(ValueError, match="semantics"):
        OptinMethod.from_config({"semantics": "papr"})


def test_reference_switches_can_be_toggled_alone():
    method = OptinMethod.from_config({"semantics": "reference", "positional_weighting": False})
    assert method.dynamic_lambda and not method.positional_weighting


def test_dynamic_kl_scaling_follows_the_authors_rule():
    md = np.array([1000.0, 5.0, 3.0, 0.5, 2.0])
    kl = np.array([0.01, 0.0, 0.002, 1.0, 0.02])
    scaled = dynamic_kl_scaling(md, kl, lambda_contribution=10.0)
    # unit 0: int(log10(1000) - log10(0.01) - 1) = int(4.0) -> 1e4
    assert scaled[0] == pytest.approx(0.01 * 1e4)
    # unit 1: KL == 0 falls back to the running mean, which leaves 0
    assert scaled[1] == 0.0
    # unit 2: int(log10(3) - log10(0.002) - 1) = int(2.176) -> 1e2; running list now [1e4, 1e2]
    assert scaled[2] == pytest.approx(0.002 * 1e2)
    # unit 3: MD <= KL -> KL times mean(1e4, 1e2)
    assert scaled[3] == pytest.approx(1.0 * 5050.0)
    # unit 4: int(log10(2) - log10(0.02) - 1) = int(1.0) -> 10 (log10 rounding would give 1e0 on 0.999..)
    assert scaled[4] == pytest.approx(0.02 * 10 ** int(np.log10(2.0) - np.log10(0.02) - 1.0))


def raw_scores():
    rows = []
    for layer in range(2):
        rows += [{"layer": layer, "kind": "head", "index": h, "md": 1.0 + h, "kl": 2.0} for h in range(3)]
        rows += [{"layer": layer, "kind": "neuron", "index": j, "md": 0.5, "kl": 1.0 + j} for j in range(4)]
    return pd.DataFrame(rows)


def test_paper_importance_is_md_plus_lambda_kl():
    scores = combine(raw_scores(), OptinMethod.from_config({}), num_layers=2)
    np.testing.assert_allclose(scores["importance"], scores["md"] + 0.1 * scores["kl"])


def test_reference_weights_and_decays():
    method = OptinMethod.from_config({"semantics": "reference", "dynamic_lambda": False, "lambda_c": 0.0})
    scores = combine(raw_scores(), method, num_layers=2).set_index(["kind", "layer", "index"])
    head_w = np.geomspace(1, 10, 3)[::-1]
    # layer 0 head 0: md 1 x position weight 10 x head decay 0.5
    assert scores.loc[("head", 0, 0), "importance"] == pytest.approx(1.0 * head_w[0] * 0.5)
    # last layer: also x fin decay 0.5
    assert scores.loc[("head", 1, 2), "importance"] == pytest.approx(3.0 * head_w[2] * 0.5 * 0.5)
    neuron_w = np.geomspace(1, 100, 4)[::-1]
    assert scores.loc[("neuron", 0, 0), "importance"] == pytest.approx(0.5 * neuron_w[0])


def test_kl_only_and_md_only_ablations():
    kl_only = combine(raw_scores(), OptinMethod.from_config({"md_weight": 0.0}), num_layers=2)
    np.testing.assert_allclose(kl_only["importance"], 0.1 * kl_only["kl"])
    md_only = combine(raw_scores(), OptinMethod.from_config({"lambda_c": 0.0}), num_layers=2)
    np.testing.assert_allclose(md_only["importance"], md_only["md"])


def test_reference_kl_only_and_md_only_mean_what_the_authors_code_means():
    """Under dynamic KL scaling, md_weight 0 ranks by plain KL (their loss_type KL), not KL scaled
    by the unit's MD; lambda_c 0 drops KL entirely. The reference weights and decays still apply."""
    raw = raw_scores()
    plain = OptinMethod.from_config({"semantics": "reference", "dynamic_lambda": False, "lambda_c": 1.0})
    weights = combine(raw, plain, num_layers=2)
    weights = (weights["importance"] / (weights["md"] + weights["kl"])).to_numpy()  # position x decays
    kl_only = combine(raw, OptinMethod.from_config({"semantics": "reference", "md_weight": 0.0}), num_layers=2)
    np.testing.assert_allclose(kl_only["importance"], kl_only["kl"] * weights)
    md_only = combine(raw, OptinMethod.from_config({"semantics": "reference", "lambda_c": 0.0}), num_layers=2)
    np.testing.assert_allclose(md_only["importance"], md_only["md"] * weights)
    both = combine(raw, OptinMethod.from_config({"semantics": "reference"}), num_layers=2)
    assert not np.allclose(both["importance"], md_only["importance"])
    with pytest.raises(ValueError, match="lambda_c = 1.0 has no effect with dynamic_lambda"):
        OptinMethod.from_config({"semantics": "reference", "lambda_c": 1.0})
    with pytest.raises(ValueError, match="no term"):
        OptinMethod.from_config({"md_weight": 0.0, "lambda_c": 0.0})


def test_final_layer_decay_and_tap_are_set_per_kind_and_default_to_the_shared_value():
    raw = raw_scores()
    method = OptinMethod.from_config({"head_fin_decay": 0.25})
    scores = combine(raw, method, num_layers=2).set_index(["kind", "layer", "index"])
    paper = combine(raw, OptinMethod(), num_layers=2).set_index(["kind", "layer", "index"])
    assert scores.loc[("head", 1, 2), "importance"] == pytest.approx(0.25 * paper.loc[("head", 1, 2), "importance"])
    assert scores.loc[("head", 0, 2), "importance"] == paper.loc[("head", 0, 2), "importance"]
    pd.testing.assert_series_equal(scores.loc["neuron", "importance"], paper.loc["neuron", "importance"])
    reference = OptinMethod.from_config({"semantics": "reference", "neuron_fin_decay": 1.0})
    assert reference.final_layer_decay("head") == 0.5 and reference.final_layer_decay("neuron") == 1.0
    split = OptinMethod.from_config({"include_final_layer_tap": False, "neuron_include_final_layer_tap": True})
    assert split.trajectory("head", 3, 4) == [] and split.trajectory("neuron", 3, 4) == [3]
    assert split.trajectory("token", 3, 4) == [] and split.trajectory("channel", 3, 4) == []
    with pytest.raises(ValueError, match="head_include_final_layer_tap"):
        OptinMethod.from_config({"head_include_final_layer_tap": "no"})
    # The decays only combine scores (shards shared); the tap changes what a shard computes.
    assert method.shard_settings() == OptinMethod().shard_settings() != split.shard_settings()


def test_next_layer_horizon_keeps_only_the_first_downstream_tap():
    paper, nearest = OptinMethod(), OptinMethod.from_config({"trajectory_horizon": "next"})
    assert paper.trajectory("head", 1, 5) == [2, 3, 4] and nearest.trajectory("head", 1, 5) == [2]
    assert nearest.trajectory("neuron", 4, 5) == paper.trajectory("neuron", 4, 5) == [4]  # a last-layer unit: its own tap
    assert nearest.trajectory("head", 1, 3, decoder_taps=2) == [2]
    two = OptinMethod.from_config({"trajectory_horizon": 2})
    assert two.trajectory("head", 0, 5) == [1, 2] and two.trajectory("head", 3, 5) == [4]
    assert OptinMethod.from_config({"trajectory_horizon": 1}).trajectory("head", 1, 5) == [2]
    for bad in ("far", 0, 1.5, True):
        with pytest.raises(ValueError, match="trajectory_horizon"):
            OptinMethod.from_config({"trajectory_horizon": bad})


def test_methods_that_differ_only_in_combining_share_score_shards():
    paper = OptinMethod()
    for change in ({"lambda_c": 1.0}, {"md_weight": 0.0}, {"dynamic_lambda": True}, {"head_metric_decay": 0.5}):
        variant = OptinMethod.from_config(change)
        assert variant.shard_settings() == paper.shard_settings()
        assert variant.scoring_settings() != paper.scoring_settings()
    for change in ({"kl_divide_logits": False}, {"md_fresh_subsets": True}, {"trajectory_horizon": "next"}):
        assert OptinMethod.from_config(change).shard_settings() != paper.shard_settings()
