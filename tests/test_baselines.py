"""Baselines that OPTIN is compared against: Kwon et al.'s Fisher scores, weight magnitude, random."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from optin.arch import adapter_for
from optin.methods.baselines import magnitude_scores, random_scores
from optin.methods.kwon import fisher_scores, mask_gradients
from optin.engine.search import search_mac

from conftest import padded_batch, tiny_bert


def _hf_loss(model, batch, labels, head_masks, neuron_masks):
    """The task loss through the unmodified HF model, masks applied by forward hooks: on each
    self-attention's context (per head) and on each intermediate activation."""
    heads = model.config.num_attention_heads

    def mask_context(module, inputs, output, mask):
        context = output[0]
        masked = (context.view(*context.shape[:-1], heads, -1) * mask[:, None]).view_as(context)
        return (masked, *output[1:])

    hooks = []
    for layer, hm, nm in zip(model.bert.encoder.layer, head_masks, neuron_masks, strict=True):
        hooks.append(layer.attention.self.register_forward_hook(lambda m, i, o, mask=hm: mask_context(m, i, o, mask)))
        hooks.append(layer.intermediate.register_forward_hook(lambda m, i, o, mask=nm: o * mask))
    try:
        with torch.no_grad():
            logits = model(**batch).logits
    finally:
        for hook in hooks:
            hook.remove()
    return float(F.cross_entropy(logits.double(), labels))


def test_mask_gradients_match_finite_differences_of_the_hf_model():
    model = tiny_bert(layers=2, heads=4, hidden=16, ffn=8).double()
    adapter = adapter_for(model)
    batch = padded_batch(lengths=(7, 4, 6))
    labels = torch.tensor([0, 2, 1])
    head_grads, neuron_grads = mask_gradients(adapter, batch, labels)
    assert head_grads.shape == (3, 8) and neuron_grads.shape == (3, 16)
    eps = 1e-6
    for i in range(3):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        for layer in range(2):
            for unit in range(4):
                diffs = []
                for sign in (1, -1):
                    hm = torch.ones(2, 4, dtype=torch.float64)
                    hm[layer, unit] += sign * eps
                    diffs.append(_hf_loss(model, one, labels[i : i + 1], hm, [torch.ones(8, dtype=torch.float64)] * 2))
                expected = (diffs[0] - diffs[1]) / (2 * eps)
                assert head_grads[i, 4 * layer + unit].item() == pytest.approx(expected, rel=1e-5, abs=1e-9)
            for unit in (0, 5):
                diffs = []
                for sign in (1, -1):
                    nm = torch.ones(2, 8, dtype=torch.float64)
                    nm[layer, unit] += sign * eps
                    diffs.append(_hf_loss(model, one, labels[i : i + 1], torch.ones(2, 4, dtype=torch.float64), nm))
                expected = (diffs[0] - diffs[1]) / (2 * eps)
                assert neuron_grads[i, 8 * layer + unit].item() == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_fisher_is_the_sum_of_squared_per_sample_gradients_not_the_batch_gradient_squared():
    model = tiny_bert(layers=2, heads=4, hidden=16, ffn=8).double()
    adapter = adapter_for(model)
    batch, labels = padded_batch(lengths=(7, 4, 6)), torch.tensor([0, 2, 1])
    scores = fisher_scores(adapter, batch, labels)
    head_grads, _ = mask_gradients(adapter, batch, labels)
    heads = scores[scores["kind"] == "head"].sort_values(["layer", "index"])
    assert heads["importance"].to_numpy() == pytest.approx(head_grads.pow(2).sum(0).numpy())
    assert not heads["importance"].to_numpy() == pytest.approx(head_grads.sum(0).pow(2).numpy())
    assert len(scores) == 2 * 4 + 2 * 8
    # The model's own parameters are untouched and still trainable afterwards.
    assert all(p.requires_grad for p in model.parameters())


def test_fisher_batch_size_one_is_the_per_sample_fisher_and_larger_batches_square_the_mean_gradient():
    """Kwon et al.'s released code squares the gradient of each mini-batch's mean loss: that gradient
    is the mean of the batch's per-sample gradients (padding rows do not interact), the oracle here."""
    model = tiny_bert(layers=2, heads=4, hidden=16, ffn=8).double()
    adapter = adapter_for(model)
    batch, labels = padded_batch(lengths=(7, 4, 6, 5, 3)), torch.tensor([0, 2, 1, 1, 0])
    per_sample_heads, per_sample_neurons = mask_gradients(adapter, batch, labels)
    default = fisher_scores(adapter, batch, labels)
    assert fisher_scores(adapter, batch, labels, fisher_batch_size=1).equals(default)
    by_two = fisher_scores(adapter, batch, labels, fisher_batch_size=2).sort_values(["kind", "layer", "index"])
    for kind, grads in (("head", per_sample_heads), ("neuron", per_sample_neurons)):
        expected = sum(grads[start : start + 2].mean(0).pow(2) for start in (0, 2, 4))
        got = by_two[by_two["kind"] == kind]["importance"].to_numpy()
        assert got == pytest.approx(expected.numpy(), rel=1e-5, abs=1e-15)  # the masks are float32
        assert not got == pytest.approx(grads.pow(2).sum(0).numpy(), rel=1e-3)
    whole, _ = mask_gradients(adapter, batch, labels, fisher_batch_size=32)
    assert whole.shape == (1, 8) and whole[0].numpy() == pytest.approx(per_sample_heads.mean(0).numpy(), rel=1e-5, abs=1e-15)
    for wrong in (0, 1.5, True):
        with pytest.raises(ValueError, match="fisher_batch_size must be a positive integer"):
            mask_gradients(adapter, batch, labels, fisher_batch_size=wrong)


@torch.no_grad()
def test_magnitude_matches_norms_read_from_the_modules():
    model = tiny_bert()
    scores = magnitude_scores(adapter_for(model))
    dh = 32 // 4
    layer = model.bert.encoder.layer[1]
    attn = layer.attention.self
    head = 2
    rows = slice(head * dh, (head + 1) * dh)
    expected_head = sum(float(p.weight[rows].abs().sum() + p.bias[rows].abs().sum()) for p in (attn.query, attn.key, attn.value))
    expected_head += float(layer.attention.output.dense.weight[:, rows].abs().sum())
    neuron = 5
    expected_neuron = float(layer.intermediate.dense.weight[neuron].abs().sum() + layer.intermediate.dense.bias[neuron].abs()
                            + layer.output.dense.weight[:, neuron].abs().sum())
    row = scores.set_index(["kind", "layer", "index"])
    assert row.loc[("head", 1, head), "l1_norm"] == pytest.approx(expected_head, rel=1e-6)
    assert row.loc[("neuron", 1, neuron), "l1_norm"] == pytest.approx(expected_neuron, rel=1e-6)
    # Importance is relative to the layer's mean norm of that kind.
    layer_heads = scores[(scores["kind"] == "head") & (scores["layer"] == 1)]
    assert layer_heads["importance"].mean() == pytest.approx(1.0)


def test_magnitude_and_random_are_deterministic_and_random_depends_on_the_seed():
    adapter = adapter_for(tiny_bert())
    pd.testing.assert_frame_equal(magnitude_scores(adapter), magnitude_scores(adapter_for(tiny_bert())))
    first, again, other = random_scores(adapter, 3), random_scores(adapter, 3), random_scores(adapter, 4)
    pd.testing.assert_frame_equal(first, again)
    assert not first["importance"].equals(other["importance"])
    assert len(first) == 3 * 4 + 3 * 48


@pytest.mark.parametrize("scorer", ["kwon", "magnitude", "random"])
def test_every_method_goes_through_the_same_mac_search(scorer):
    adapter = adapter_for(tiny_bert())
    batch = padded_batch()
    if scorer == "kwon":
        scores = fisher_scores(adapter, batch, torch.tensor([0, 1, 2, 0, 1, 2]))
    elif scorer == "magnitude":
        scores = magnitude_scores(adapter)
    else:
        scores = random_scores(adapter, 0)
    heads, neurons = adapter.unit_counts("head"), adapter.unit_counts("neuron")
    base = sum(heads) * 10.0 + sum(neurons) * 1.0
    kept, result = search_mac(scores, budget=0.5, head_cost=10.0, neuron_cost=1.0, base_macs=base,
                              heads_per_layer=heads, neurons_per_layer=neurons)
    assert result["achieved_ratio"] <= 0.5 + 1e-9
    # Within a layer the search keeps the top units of the method's ranking.
    for layer, kept_neurons in enumerate(kept["neuron"]):
        part = scores[(scores["kind"] == "neuron") & (scores["layer"] == layer)].sort_values("importance", ascending=False)
        assert set(kept_neurons) == set(part["index"].iloc[: len(kept_neurons)])


def _objective(grads, keep):
    fisher = grads.double().T @ grads.double()
    pruned = [u for u in range(grads.shape[1]) if u not in keep]
    return float(fisher[pruned][:, pruned].sum())


def test_rearrangement_keeps_the_count_and_ends_where_no_swap_helps():
    from optin.methods.kwon import rearrange_layer

    g = torch.Generator().manual_seed(0)
    direction, other = torch.randn(2, 16, generator=g, dtype=torch.float64)
    # Units 0 and 2 have opposite gradients: pruned together they cancel, which the diagonal misses.
    grads = torch.stack([3 * direction / direction.norm(), 2.9 * other / other.norm(),
                         -2.85 * direction / direction.norm(), 0.1 * torch.randn(16, generator=g, dtype=torch.float64)], dim=1)
    diagonal_top = torch.argsort(-(grads**2).sum(0))[:2].tolist()
    assert sorted(diagonal_top) == [0, 1]
    kept = rearrange_layer(grads, diagonal_top)
    assert sorted(kept) == [1, 3]  # prunes the cancelling pair instead
    assert _objective(grads, kept) < 0.1 * _objective(grads, diagonal_top)
    for i in kept:  # a local optimum: no single swap lowers the objective
        for j in set(range(4)) - set(kept):
            assert _objective(grads, (set(kept) - {i}) | {j}) >= _objective(grads, kept) - 1e-9


def test_mask_tuning_is_exact_when_nothing_is_pruned_and_helps_when_something_is():
    from optin.arch import Kept
    from optin.arch.base import apply_unit_scales
    from optin.methods.kwon import tune_scales
    from optin.engine.scoring import run_teacher

    model = tiny_bert(layers=2, heads=4, hidden=16, ffn=8)
    adapter = adapter_for(model)
    batch = padded_batch(lengths=(7, 4, 6, 5))
    teacher = run_teacher(adapter, batch, include_padding=False)
    everything = Kept.of(head=((0, 1, 2, 3),) * 2, neuron=(tuple(range(8)),) * 2)
    heads, neurons = tune_scales(adapter, teacher, everything)
    # (float32 teacher features against a float64 solve: agreement to ~1e-5)
    assert torch.allclose(torch.tensor(heads), torch.ones(2, 4), atol=1e-4)
    assert torch.allclose(torch.tensor(neurons), torch.ones(2, 8), atol=1e-4)

    kept = Kept.of(head=((0, 2), (1, 3)), neuron=((0, 1, 5), (2, 3, 4, 7)))
    heads, neurons = tune_scales(adapter, teacher, kept)
    head_masks, neuron_masks = adapter.kept_masks(kept)
    # Mask values = scales in the functional forward ...
    scaled_heads = [m.clone() for m in head_masks]
    scaled_neurons = [m.clone() for m in neuron_masks]
    for layer in range(2):
        scaled_heads[layer][list(kept["head"][layer])] = torch.tensor(heads[layer])
        scaled_neurons[layer][list(kept["neuron"][layer])] = torch.tensor(neurons[layer])
    rows = teacher.rows
    _, _, by_mask_values = adapter.forward(batch, scaled_heads, scaled_neurons, rows=rows)
    _, _, untuned = adapter.forward(batch, head_masks, neuron_masks, rows=rows)
    # ... bring the pruned model's logits closer to the unpruned ones on the calibration batch,
    assert (by_mask_values - teacher.logits).norm() < (untuned - teacher.logits).norm()
    # ... and folding them into the weights gives the same model.
    apply_unit_scales(adapter, kept, heads, neurons)
    _, _, folded = adapter.forward(batch, head_masks, neuron_masks, rows=rows)
    torch.testing.assert_close(folded, by_mask_values, rtol=0, atol=1e-5)


def test_cost_weighting_lets_unscaled_baselines_keep_heads_and_neurons_alike():
    from optin.engine.search import cost_weighted

    adapter = adapter_for(tiny_bert())
    scores = random_scores(adapter, 0)
    weighted = cost_weighted(scores, 11840.0, [640.0, 700.0, 800.0])
    heads, neurons = scores["kind"] == "head", scores["kind"] == "neuron"
    assert weighted.loc[heads, "importance"].to_numpy() == pytest.approx(11840.0 * scores.loc[heads, "importance"].to_numpy())
    layer2 = neurons & (scores["layer"] == 2)
    assert weighted.loc[layer2, "importance"].to_numpy() == pytest.approx(800.0 * scores.loc[layer2, "importance"].to_numpy())
    counts = dict(heads_per_layer=adapter.unit_counts("head"), neurons_per_layer=adapter.unit_counts("neuron"))
    base = 12 * 11840.0 + 144 * 640.0
    plain, _ = search_mac(scores, budget=0.5, head_cost=11840.0, neuron_cost=640.0, base_macs=base, **counts)
    fair, _ = search_mac(cost_weighted(scores, 11840.0, 640.0), budget=0.5, head_cost=11840.0, neuron_cost=640.0,
                         base_macs=base, **counts)
    assert sum(plain.counts("head")) <= 2  # unit-scale scores buy neurons and drop nearly every head
    assert 0.25 <= sum(fair.counts("head")) / 12 <= 0.75
