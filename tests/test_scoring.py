import pandas as pd
import pytest
import torch

from optin.engine.settings import OptinMethod
from optin.engine.scoring import run_teacher, score_layer, score_naive

VARIANTS = {
    "paper": {"semantics": "paper"},
    "paper-padding-rows": {"semantics": "paper", "md_include_padding": True},
    "paper-literal-trajectory": {"semantics": "paper", "include_final_layer_tap": False},
    "reference-heads-without-final-tap": {"semantics": "reference", "head_include_final_layer_tap": False},
    "reference-no-padding-rows": {"semantics": "reference", "md_include_padding": False},
    "reference": {"semantics": "reference"},
    "paper-row-subset": {"semantics": "paper", "md_rows": 10},
    "reference-fresh-subsets": {"semantics": "reference", "md_rows": 10},
    "reference-cumulative-head-mask": {"semantics": "reference", "cumulative_head_mask": True},
    "paper-next-layer-horizon": {"semantics": "paper", "trajectory_horizon": "next"},
    "paper-two-tap-horizon": {"semantics": "paper", "trajectory_horizon": 2},
    "paper-layer-output-tap": {"semantics": "paper", "tap": "layer_output"},
}


def test_functional_forward_is_the_hf_forward(model, adapter, batch):
    with torch.no_grad():
        expected = model(**batch).logits
    torch.testing.assert_close(run_teacher(adapter, batch).logits, expected, rtol=0, atol=1e-6)


def test_packed_rows_give_the_padded_batch_features(adapter, batch):
    padded = run_teacher(adapter, batch, include_padding=True)
    packed = run_teacher(adapter, batch, include_padding=False)
    real = batch["attention_mask"].bool()
    assert len(packed.layer_inputs[0]) == int(real.sum()) < len(padded.layer_inputs[0])
    torch.testing.assert_close(packed.logits, padded.logits, rtol=0, atol=1e-5)
    for k in range(adapter.num_layers):  # canonical (sequence, position) row order
        torch.testing.assert_close(packed.taps[k], padded.taps[k][real.reshape(-1)], rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("kind", ["head", "neuron"])
def test_fast_scores_equal_naive_scores(adapter, batch, variant, kind):
    method = OptinMethod.from_config(VARIANTS[variant])
    adapter.tap_position = method.tap
    teacher = run_teacher(adapter, batch, include_padding=method.md_include_padding)
    for layer in range(adapter.num_layers):
        fast = score_layer(adapter, teacher, layer, kind, method, seed=3, chunk=3)
        naive = score_naive(adapter, teacher, layer, kind, method, seed=3)
        pd.testing.assert_frame_equal(fast[["layer", "kind", "index"]], naive[["layer", "kind", "index"]])
        assert (naive["kl"] > 0).any()
        torch.testing.assert_close(torch.tensor(fast["md"].values), torch.tensor(naive["md"].values), rtol=1e-4, atol=1e-9)
        # Reference semantics compute KL in float32 like the authors: T^2 * sum over the batch of
        # float32 rounding in the logits is ~1e-5 absolute, whichever path computed them.
        kl_atol = 1e-9 if method.kl_float64 else 2e-5
        torch.testing.assert_close(torch.tensor(fast["kl"].values), torch.tensor(naive["kl"].values), rtol=1e-4, atol=kl_atol)


def test_last_layer_units_compare_their_own_tap_unless_switched_off(adapter, batch):
    last = adapter.num_layers - 1
    teacher = run_teacher(adapter, batch, False)
    default = score_layer(adapter, teacher, last, "neuron", OptinMethod.from_config({}), seed=0)
    kl_only = score_layer(adapter, teacher, last, "neuron", OptinMethod.from_config({"include_final_layer_tap": False}), seed=0)
    assert (default["md"] > 0).all()
    assert (kl_only["md"] == 0).all()
    torch.testing.assert_close(torch.tensor(default["kl"].values), torch.tensor(kl_only["kl"].values))


def test_heads_and_neurons_have_their_own_final_layer_tap_switch(adapter, batch):
    """The authors' head_/neuron_include_fin_layer_mmd: turning it off for heads leaves neurons as they were."""
    last = adapter.num_layers - 1
    teacher = run_teacher(adapter, batch, False)
    method = OptinMethod.from_config({"head_include_final_layer_tap": False})
    heads, neurons = (score_layer(adapter, teacher, last, kind, method, seed=0) for kind in ("head", "neuron"))
    default_neurons = score_layer(adapter, teacher, last, "neuron", OptinMethod.from_config({}), seed=0)
    assert (heads["md"] == 0).all() and (heads["kl"] > 0).all()
    pd.testing.assert_frame_equal(neurons, default_neurons)
    assert method.trajectory("head", 0, 3) == [1, 2]  # only the last layer is affected


def test_masking_a_unit_changes_downstream_taps(adapter, batch):
    teacher = run_teacher(adapter, batch, include_padding=False)
    scores = score_layer(adapter, teacher, 0, "head", OptinMethod.from_config({}), seed=0)
    assert (scores["md"] > 0).all()


def test_scores_do_not_depend_on_chunk_size(adapter, batch):
    teacher = run_teacher(adapter, batch, include_padding=True)
    method = OptinMethod.from_config({"semantics": "reference", "md_rows": 10})
    a = score_layer(adapter, teacher, 1, "neuron", method, seed=0, chunk=1)
    b = score_layer(adapter, teacher, 1, "neuron", method, seed=0, chunk=48)
    torch.testing.assert_close(torch.tensor(a["md"].values), torch.tensor(b["md"].values), rtol=1e-5, atol=0)


def test_teacher_must_match_the_methods_padding_rows(adapter, batch):
    with pytest.raises(ValueError, match="md_include_padding"):
        score_layer(adapter, run_teacher(adapter, batch, True), 0, "head", OptinMethod.from_config({}), seed=0)


def test_layer_output_taps_are_the_hf_hidden_states(model, adapter, batch):
    adapter.tap_position = "layer_output"
    teacher = run_teacher(adapter, batch, include_padding=True)
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states
    for k in range(adapter.num_layers):
        torch.testing.assert_close(teacher.taps[k], hidden[k + 1].reshape(-1, hidden[k + 1].shape[-1]), rtol=0, atol=1e-5)
    adapter.tap_position = "default"
    assert not torch.allclose(run_teacher(adapter, batch).taps[0], teacher.taps[0], atol=1e-3)


@pytest.mark.parametrize("kind", ["head", "neuron"])
def test_regressor_scores_fast_equal_naive_and_see_the_output_drift(batch, kind):
    """STS-B: a single-output BERT regressor; its logit term must not vanish like a 1-class KL."""
    from conftest import tiny_bert

    from optin.arch import adapter_for

    adapter = adapter_for(tiny_bert(labels=1))
    method = OptinMethod.from_config({"semantics": "paper"})
    teacher = run_teacher(adapter, batch, include_padding=method.md_include_padding)
    fast = score_layer(adapter, teacher, 0, kind, method, seed=3, chunk=3)
    naive = score_naive(adapter, teacher, 0, kind, method, seed=3)
    assert (naive["kl"] > 0).all()
    torch.testing.assert_close(torch.tensor(fast["kl"].values), torch.tensor(naive["kl"].values), rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(torch.tensor(fast["md"].values), torch.tensor(naive["md"].values), rtol=1e-4, atol=1e-9)
