"""Vision adapters on tiny ViT / DeiT / DINOv2 (HF) and timm DeiT models built from configs."""

import pytest
import timm
import torch
from transformers import (
    AutoModelForImageClassification,
    DeiTConfig,
    DeiTForImageClassificationWithTeacher,
    Dinov2Config,
    Dinov2ForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from optin.engine import flops
from optin.arch import Kept, adapter_for
from optin.arch.vit import HfVitAdapter, TimmVitAdapter
from optin.arch.vit_slim_model import bipartite_merge
from optin.engine.settings import OptinMethod
from optin.engine.scoring import run_teacher, score_layer, score_naive
from optin.engine.search import search_tau

TIMM_KWARGS = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_ratio=1.5, num_classes=3)
KEPT = Kept.of(head=((0, 2), (), (1, 2, 3)), neuron=((), tuple(range(10)), (5, 7)))


def _perturbed(model):
    # Freshly initialised ViTs have near-zero projections; spread the weights so units matter.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def hf_model(kind: str):
    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, image_size=28, patch_size=7, num_labels=3)
    if kind == "vit":
        return _perturbed(ViTForImageClassification(ViTConfig(intermediate_size=48, **common)))
    if kind == "deit":
        return _perturbed(DeiTForImageClassificationWithTeacher(DeiTConfig(intermediate_size=48, **common)))
    return _perturbed(Dinov2ForImageClassification(Dinov2Config(mlp_ratio=2, layerscale_value=0.5, **common)))


def timm_model():
    torch.manual_seed(0)
    return _perturbed(timm.create_model("deit_tiny_patch16_224", pretrained=False, **TIMM_KWARGS))


def images(size: int, n: int = 3):
    return {"pixel_values": torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))}


MODELS = {
    "vit": (lambda: hf_model("vit"), 28),
    "deit": (lambda: hf_model("deit"), 28),
    "dinov2": (lambda: hf_model("dinov2"), 28),
    "timm": (timm_model, 32),
}


def _native(model, batch):
    with torch.no_grad():
        out = model(**batch) if not isinstance(model, timm.models.VisionTransformer) else model(batch["pixel_values"])
    return getattr(out, "logits", out)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_adapter_forward_is_the_model_forward(name):
    build, size = MODELS[name]
    model = build()
    batch = images(size)
    torch.testing.assert_close(adapter_for(model).forward(batch)[2], _native(model, batch), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("kind", ["head", "neuron", "token"])
def test_fast_scores_equal_the_naive_oracle(name, kind):
    build, size = MODELS[name]
    adapter = adapter_for(build())
    teacher = run_teacher(adapter, images(size))
    method = OptinMethod()
    for layer in range(1 if kind == "token" else 0, adapter.num_layers):
        fast = score_layer(adapter, teacher, layer, kind, method, seed=0, chunk=5)
        naive = score_naive(adapter, teacher, layer, kind, method, seed=0)
        assert len(fast) == len(naive) > 0
        torch.testing.assert_close(torch.tensor(fast["md"].values), torch.tensor(naive["md"].values), rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(torch.tensor(fast["kl"].values), torch.tensor(naive["kl"].values), rtol=1e-3, atol=1e-9)


def test_last_layer_units_are_scored_on_the_output_tap():
    adapter = adapter_for(hf_model("vit"))
    teacher = run_teacher(adapter, images(28))
    last = adapter.num_layers - 1
    assert (score_layer(adapter, teacher, last, "head", OptinMethod(), seed=0)["md"] > 0).all()
    literal = OptinMethod(include_final_layer_tap=False)
    assert (score_layer(adapter, teacher, last, "head", literal, seed=0)["md"] == 0).all()


def test_token_drop_matches_the_hf_layers_on_sliced_states():
    """Independent oracle: HF's own layer modules on hidden states with token p sliced out."""
    model = hf_model("vit")
    adapter = adapter_for(model)
    batch = images(28)
    layer, position = 2, 5
    with torch.no_grad():
        h = model.vit.embeddings(batch["pixel_values"])
        for index, block in enumerate(model.vit.layers):
            if index == layer:
                h = torch.cat([h[:, :position], h[:, position + 1:]], dim=1)
            h = block(h)
        expected = model.classifier(model.vit.layernorm(h)[:, 0])
    _, _, logits = adapter.forward(batch, drop_token=(layer, position))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["vit", "deit", "dinov2"])
def test_hf_slim_model_is_the_masked_model_and_reloads(name, tmp_path):
    build, size = MODELS[name]
    adapter = adapter_for(build())
    batch = images(size)
    head_masks, neuron_masks = adapter.kept_masks(KEPT)
    masked = adapter.forward(batch, head_masks, neuron_masks)[2]
    slim = adapter.slim(KEPT)
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, masked, rtol=0, atol=1e-5)
    HfVitAdapter.save_slim(slim, tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, slim(**batch).logits, rtol=0, atol=0)
    again = adapter_for(reloaded)
    assert again.unit_counts("head") == [2, 0, 3] and again.unit_counts("neuron") == [0, 10, 2]
    counted = flops.count_linear_attention_macs(again.layer_linear_shapes(), 17.0)
    assert counted == pytest.approx(flops.encoder_macs([2, 0, 3], [0, 10, 2], 17.0, 32, 8), rel=1e-12)
    assert sum(p.numel() for p in reloaded.parameters()) < sum(p.numel() for p in adapter.model.parameters())


def test_timm_slim_model_is_the_masked_model_and_reloads(tmp_path):
    adapter = adapter_for(timm_model())
    assert isinstance(adapter, TimmVitAdapter)
    batch = images(32)
    masked = adapter.forward(batch, *adapter.kept_masks(KEPT))[2]
    slim = adapter.slim(KEPT)
    with torch.no_grad():
        torch.testing.assert_close(slim(batch["pixel_values"]), masked, rtol=0, atol=1e-5)
    TimmVitAdapter.save_slim(slim, tmp_path, timm_name="deit_tiny_patch16_224", timm_kwargs=TIMM_KWARGS)
    reloaded = TimmVitAdapter.load_slim(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(batch["pixel_values"]), slim(batch["pixel_values"]), rtol=0, atol=0)
    assert adapter_for(reloaded).unit_counts("head") == [2, 0, 3]


@pytest.mark.parametrize("name", ["vit", "deit", "dinov2", "timm"])
def test_token_merging_with_r_zero_is_the_identity(name):
    build, size = MODELS[name]
    model = build()
    batch = images(size)
    torch.testing.assert_close(adapter_for(model).forward_merged(batch, [0, 0, 0]), _native(model, batch), rtol=0, atol=1e-5)


def test_merged_slim_model_runs_the_merge_schedule(tmp_path):
    adapter = adapter_for(hf_model("dinov2"))
    batch = images(28)
    merges = [0, 5, 3]
    head_masks, neuron_masks = adapter.kept_masks(KEPT)
    functional = adapter.forward_merged(batch, merges, head_masks, neuron_masks)
    slim = adapter.slim(KEPT, token_merges=merges)
    HfVitAdapter.save_slim(slim, tmp_path)
    reloaded = HfVitAdapter.load_slim(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, functional, rtol=0, atol=1e-5)
        assert not torch.allclose(functional, adapter.forward(batch, head_masks, neuron_masks)[2], atol=1e-4)


def test_tau_search_never_merges_the_last_patch_token():
    scores = __import__("pandas").DataFrame(
        [{"layer": l, "kind": "head", "index": i, "importance": 1.0} for l in range(3) for i in range(4)]
        + [{"layer": l, "kind": "neuron", "index": i, "importance": 1.0} for l in range(3) for i in range(48)]
        + [{"layer": l, "kind": "token", "index": i, "importance": 0.0} for l in (1, 2) for i in range(1, 17)])
    with pytest.raises(ValueError, match="all but one patch token"):
        search_tau(scores, budget=0.05, head_neuron_share=0.15, seq_len=17.0, hidden=32, head_dim=8,
                   heads_per_layer=[4] * 3, neurons_per_layer=[48] * 3, max_removed=15)


def test_bipartite_merge_conserves_mass_and_count():
    x = torch.randn(2, 11, 8, generator=torch.Generator().manual_seed(0))
    size = torch.ones(2, 11)
    merged, new_size = bipartite_merge(x, size, r=7, prefix=1)  # more than one round (|A| = 5)
    assert merged.shape == (2, 4, 8) and new_size.shape == (2, 4)
    torch.testing.assert_close(new_size.sum(1), torch.full((2,), 11.0))
    torch.testing.assert_close((merged * new_size.unsqueeze(-1)).sum(1), x.sum(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged[:, 0], x[:, 0])  # CLS untouched


def test_tau_search_meets_the_budget_with_non_increasing_tokens():
    adapter = adapter_for(hf_model("vit"))
    teacher = run_teacher(adapter, images(28))
    import pandas as pd

    from optin.methods.optin import combine

    raw = pd.concat([score_layer(adapter, teacher, layer, kind, OptinMethod(), seed=0)
                     for layer in range(3) for kind in ("head", "neuron", "token") if not (kind == "token" and layer == 0)])
    scores = combine(raw, OptinMethod(), 3)
    kept, removed, info = search_tau(scores, budget=0.6, head_neuron_share=0.2, seq_len=17.0, hidden=32, head_dim=8,
                                     heads_per_layer=[4] * 3, neurons_per_layer=[48] * 3, max_removed=15)
    assert removed[0] == 0 and all(a <= b for a, b in zip(removed, removed[1:])) and removed[-1] <= 15
    # What the merge schedule really runs on is what the search accounted for.
    counts = []
    merges = [removed[0]] + [b - a for a, b in zip(removed, removed[1:])]
    adapter.forward_merged(images(28), merges, token_counts=counts)
    assert [counts[0] - c for c in counts] == removed
    assert info["achieved_ratio"] <= 0.6 + 1e-12
    heads, neurons = kept.counts("head"), kept.counts("neuron")
    direct = sum(h * flops.head_macs(17 - r, 32, 8) + n * flops.neuron_macs(17 - r, 32)
                 for h, n, r in zip(heads, neurons, removed))
    assert info["achieved_macs"] == pytest.approx(direct, rel=1e-12)
    # Heads and neurons alone take only their share of the reduction.
    assert flops.encoder_macs(heads, neurons, 17.0, 32, 8) >= (1 - 0.2 * 0.4) * info["base_macs"] - flops.head_macs(17, 32, 8)


def test_a_model_without_attention_is_refused():
    with pytest.raises(TypeError, match="Sequential"):
        adapter_for(torch.nn.Sequential(torch.nn.Linear(3, 3)))


@pytest.mark.parametrize("fresh", [False, True])
def test_token_scores_with_a_row_subset_equal_the_oracle(fresh):
    """Batches with more rows than md_rows (the paper's 128 x 197): each variant compares the rows
    of the subset that it still has."""
    adapter = adapter_for(hf_model("vit"))
    teacher = run_teacher(adapter, images(28, n=4))  # 4 x 17 = 68 rows
    method = OptinMethod(md_rows=24, md_fresh_subsets=fresh)
    fast = score_layer(adapter, teacher, 1, "token", method, seed=3, chunk=5)
    naive = score_naive(adapter, teacher, 1, "token", method, seed=3)
    torch.testing.assert_close(torch.tensor(fast["md"].values), torch.tensor(naive["md"].values), rtol=1e-4, atol=1e-9)


def test_uniform_token_schedule_is_tome_alone_at_equal_macs():
    import pandas as pd

    scores = pd.DataFrame(
        [{"layer": l, "kind": "head", "index": i, "importance": 1.0 + i} for l in range(4) for i in range(4)]
        + [{"layer": l, "kind": "neuron", "index": i, "importance": 1.0} for l in range(4) for i in range(48)]
        + [{"layer": l, "kind": "token", "index": i, "importance": float(i)} for l in (1, 2, 3) for i in range(1, 17)])
    shape = dict(seq_len=17.0, hidden=32, head_dim=8, heads_per_layer=[4] * 4, neurons_per_layer=[48] * 4, max_removed=15)
    kept, removed, info = search_tau(scores, budget=0.7, head_neuron_share=0.0, uniform=True, **shape)
    assert (kept.counts("head"), kept.counts("neuron")) == ([4] * 4, [48] * 4)  # every head and neuron kept
    # The smallest r per layer whose schedule (0, r, 2r, 3r) fits 0.7 of the MACs, found by brute force.
    base = flops.encoder_macs([4] * 4, [48] * 4, 17.0, 32, 8)

    def macs(r):
        return flops.encoder_macs([4] * 4, [48] * 4, [17.0 - min(r * l, 15) for l in range(4)], 32, 8)

    r = next(r for r in range(1, 16) if macs(r) <= 0.7 * base)
    assert removed == [min(r * l, 15) for l in range(4)]
    assert info["achieved_ratio"] == pytest.approx(macs(r) / base) and info["token_schedule"] == "uniform"
    _, by_score, _ = search_tau(scores, budget=0.7, head_neuron_share=0.0, **shape)
    assert by_score != removed  # OPTIN-tau's schedule follows the token scores instead


def _separable_images(n: int, seed: int):
    """Two classes a linear probe and a ViT can tell apart: a bright left or right half, plus noise."""
    from optin.data.images import ImageSplit

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randn(n, 1, 28, 28, generator=g) * 0.3
    images[labels == 0, :, :, :14] += 1.0
    images[labels == 1, :, :, 14:] += 1.0
    return ImageSplit(lambda rows: images[torch.as_tensor(list(rows))], labels.numpy())


def test_vit_training_learns_end_to_end_and_is_repeatable():
    from optin.models.vision import accuracy, train_vit

    def trained():
        torch.manual_seed(0)
        config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=28,
                           patch_size=4, num_channels=1, num_labels=2)
        model = ViTForImageClassification(config)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model = train_vit(model, _separable_images(64, seed=0), epochs=3, lr=3e-3, batch_size=16, weight_decay=0.05,
                          seed=0, log=lambda _: None)
        return model, before

    model, before = trained()
    assert not model.training
    # Every layer moved (end to end, not a probe), and it learned the task.
    assert not torch.equal(before["vit.layers.0.attention.q_proj.weight"], model.state_dict()["vit.layers.0.attention.q_proj.weight"])
    assert accuracy(model, _separable_images(64, seed=1)) >= 0.95
    again, _ = trained()
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    with pytest.raises(ValueError, match="batch_size 128 is larger than the 64 training images"):
        train_vit(model, _separable_images(64, seed=0), epochs=1, lr=1e-3, batch_size=128, weight_decay=0.0, seed=0)


def test_structured_dropout_drops_whole_heads_and_neurons_per_sample_in_training_only():
    from optin.models.vision import StructuredDropout

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                                image_size=28, patch_size=4, num_channels=1, num_labels=2))
    seen, pixels = {}, torch.randn(16, 1, 28, 28)
    with StructuredDropout(model, head_drop=0.5, neuron_drop=0.25):
        for name in ("o_proj", "fc2"):  # what the projection receives, after the dropout hook
            module = getattr(model.vit.layers[0].attention if name == "o_proj" else model.vit.layers[1].mlp, name)
            module.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0].detach().clone()))
        model.eval()
        model(pixel_values=pixels)
        plain = {k: v.clone() for k, v in seen.items()}
        model.train()
        model(pixel_values=pixels)
    heads = seen["o_proj"].reshape(16, -1, 4, 8)  # samples x tokens x heads x head dim
    dropped = (heads == 0).all(dim=(1, 3))        # a dropped head is zero at every token and dim
    assert dropped.any() and not dropped.all()
    # Layer 0's heads see the same input in both modes: a kept head is scaled by 1 / (1 - 0.5).
    kept = (~dropped)[:, None, :, None].expand_as(heads)
    torch.testing.assert_close(heads[kept], 2 * plain["o_proj"].reshape(16, -1, 4, 8)[kept])
    neurons_dropped = (seen["fc2"] == 0).all(dim=1)  # samples x neurons, zero at every token
    assert 0.1 < neurons_dropped.float().mean() < 0.4
    # In eval mode nothing is dropped or rescaled.
    assert not (plain["o_proj"].reshape(16, -1, 4, 8) == 0).all(dim=(1, 3)).any()
    # The hooks leave with the context: a plain ViT is saved.
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 2  # only this test's own
    model.train()
    model(pixel_values=pixels)
    assert not (seen["o_proj"].reshape(16, -1, 4, 8) == 0).all(dim=(1, 3)).any()


def test_linear_probe_trains_only_the_head():
    from optin.models.vision import accuracy, train_linear_head

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                                image_size=28, patch_size=4, num_channels=1, num_labels=2)).eval()
    backbone = {k: v.clone() for k, v in model.vit.state_dict().items()}
    model = train_linear_head(model, _separable_images(64, seed=0), epochs=200, lr=1e-2, weight_decay=0.0, seed=0, log=lambda _: None)
    assert all(torch.equal(v, model.vit.state_dict()[k]) for k, v in backbone.items())
    assert accuracy(model, _separable_images(64, seed=1)) >= 0.9
