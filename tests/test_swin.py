"""Mask2Former with a Swin backbone: adapter, scoring, slimming and the window-attention MAC model."""

import pytest
import torch
from transformers import AutoModelForUniversalSegmentation, Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from optin.engine import flops
from optin.arch import Kept, adapter_for
from optin.arch.swin import Mask2FormerSwinAdapter, semantic_scores
from optin.engine.settings import OptinMethod
from optin.engine.scoring import run_teacher, score_layer, score_naive
from optin.engine.search import search_mac

# 52 x 60 pixels: a 13 x 15 patch grid, so windows are padded and patch merging pads odd maps.
IMAGE = (52, 60)


def tiny_mask2former(seed: int = 0) -> Mask2FormerForUniversalSegmentation:
    torch.manual_seed(seed)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                          window_size=4, mlp_ratio=1.5, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=3, feature_size=32, mask_feature_size=32,
                               hidden_dim=32, encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1,
                               decoder_layers=2, num_attention_heads=2, num_queries=4)
    model = Mask2FormerForUniversalSegmentation(config)
    with torch.no_grad():  # spread the freshly initialised weights so every unit matters
        for p in model.model.pixel_level_module.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def images(n: int = 2):
    return {"pixel_values": torch.randn(n, 3, *IMAGE, generator=torch.Generator().manual_seed(1))}


def native_scores(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return semantic_scores(out.class_queries_logits, out.masks_queries_logits)


def as_score_maps(logits, n: int = 2):
    """Per-pixel log-score rows -> [N, C, h, w] at mask resolution (1/4 of the image)."""
    return logits.exp().view(n, IMAGE[0] // 4, IMAGE[1] // 4, -1).permute(0, 3, 1, 2)


def adapter_scores(adapter, batch):
    return as_score_maps(adapter.forward(batch)[2])


def test_adapter_forward_is_the_model_forward():
    model = tiny_mask2former()
    adapter = adapter_for(model)
    assert isinstance(adapter, Mask2FormerSwinAdapter)
    assert adapter.num_layers == 8 and adapter.unit_counts("head") == [1, 1, 2, 2, 4, 4, 8, 8]
    assert adapter.unit_counts("neuron") == [24, 24, 48, 48, 96, 96, 192, 192]
    batch = images()
    torch.testing.assert_close(adapter_scores(adapter, batch), native_scores(model, batch), rtol=0, atol=1e-5)


def test_stage_taps_are_the_backbone_feature_maps():
    model = tiny_mask2former()
    adapter = adapter_for(model)
    batch = images()
    _, layout = adapter.embed(batch)
    _, taps, _ = adapter.forward(batch)
    maps = adapter.feature_maps({k: taps[k] for k in adapter.readout_layers}, layout)
    with torch.no_grad():
        native = model.model.pixel_level_module.encoder(batch["pixel_values"]).feature_maps
    for ours, theirs in zip(maps, native, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["head", "neuron"])
def test_fast_scores_equal_the_naive_oracle(kind):
    adapter = adapter_for(tiny_mask2former())
    teacher = run_teacher(adapter, images())
    method = OptinMethod(md_rows=64)  # stage 1 has 2 x 13 x 15 = 390 rows: a fixed subset per tap
    for layer in range(adapter.num_layers):
        units = None if kind == "head" else list(range(0, adapter.unit_counts("neuron")[layer], 7))
        fast = score_layer(adapter, teacher, layer, kind, method, seed=0, chunk=3, units=units)
        naive = score_naive(adapter, teacher, layer, kind, method, seed=0, units=units)
        assert len(fast) == len(naive) > 0
        # float32 Gram sums: a unit whose MD is 1e-5 of its layer's largest carries that one's rounding
        # (measured: 5e-9 on an MD of 2e-5 when two test workers share the cores)
        md_scale = float(naive["md"].abs().max())
        torch.testing.assert_close(torch.tensor(fast["md"].values), torch.tensor(naive["md"].values), rtol=1e-4,
                                   atol=1e-6 * md_scale)
        torch.testing.assert_close(torch.tensor(fast["kl"].values), torch.tensor(naive["kl"].values), rtol=1e-3, atol=1e-9)
        assert (fast["md"] > 0).all()


def test_decoder_taps_join_every_units_trajectory():
    adapter = adapter_for(tiny_mask2former())
    method = OptinMethod()
    assert method.trajectory("head", 2, 8, adapter.final_tap, adapter.decoder_taps) == [3, 4, 5, 6, 7, 8, 9]
    assert method.trajectory("neuron", 7, 8, adapter.final_tap, adapter.decoder_taps) == [8, 9]


def test_fresh_row_subsets_need_taps_of_one_size():
    adapter = adapter_for(tiny_mask2former())
    teacher = run_teacher(adapter, images())
    with pytest.raises(ValueError, match="md_fresh_subsets"):
        score_layer(adapter, teacher, 0, "head", OptinMethod(md_rows=64, md_fresh_subsets=True), seed=0)


KEPT = Kept.of(head=((0,), (), (1,), (0, 1), (0, 2, 3), (), (1, 2, 5, 7), (0,)),
               neuron=(tuple(range(5)), (3, 9), (), tuple(range(0, 48, 2)), (1,), tuple(range(50)), (), (4, 100)))


def test_slim_model_is_the_masked_model_and_reloads(tmp_path):
    model = tiny_mask2former()
    adapter = adapter_for(model)
    batch = images()
    head_masks, neuron_masks = adapter.kept_masks(KEPT)
    _, _, masked_logits = adapter.forward(batch, head_masks, neuron_masks)
    slim = adapter.slim(KEPT)
    slim_adapter = adapter_for(slim)
    assert slim_adapter.unit_counts("head") == [len(h) for h in KEPT["head"]]
    assert slim_adapter.unit_counts("neuron") == [len(n) for n in KEPT["neuron"]]
    masked = as_score_maps(masked_logits)
    torch.testing.assert_close(native_scores(slim, batch), masked, rtol=0, atol=1e-5)
    Mask2FormerSwinAdapter.save_slim(slim, tmp_path)
    reloaded = AutoModelForUniversalSegmentation.from_pretrained(tmp_path, trust_remote_code=True).eval()
    torch.testing.assert_close(native_scores(reloaded, batch), masked, rtol=0, atol=1e-5)
    assert flops.count_module_params(reloaded) == flops.count_module_params(slim) < flops.count_module_params(model)


def _backbone_block_macs(model, batch) -> float:
    """FlopCounterMode's count of the Swin blocks' attention and MLP modules (an independent oracle)."""
    _, per_module = flops.measured_macs(model, **batch)
    return sum(v for name, v in per_module.items() if ".blocks." in name and name.endswith((".attention", ".mlp")))


@pytest.mark.parametrize("kept", [None, KEPT])
def test_window_mac_model_equals_the_direct_count_and_the_flop_counter(kept):
    model = tiny_mask2former()
    adapter = adapter_for(model)
    if kept is not None:
        model = adapter.slim(kept)
        adapter = adapter_for(model)
    batch = images(1)
    grid = adapter.patch_grid(IMAGE)
    assert grid == (13, 15)
    head_cost, neuron_cost = adapter.unit_macs(grid)
    modelled = sum(h * c for h, c in zip(adapter.unit_counts("head"), head_cost, strict=True)) + sum(
        n * c for n, c in zip(adapter.unit_counts("neuron"), neuron_cost, strict=True))
    direct = flops.count_window_attention_macs(adapter.layer_linear_shapes(), adapter.block_geometry(grid))
    assert modelled == pytest.approx(direct, rel=1e-12)
    # FlopCounterMode also counts the bias-only branches of empty blocks as zero.
    assert _backbone_block_macs(model, batch) == pytest.approx(modelled, rel=1e-9)


def test_search_with_per_layer_costs_meets_the_budget():
    adapter = adapter_for(tiny_mask2former())
    teacher = run_teacher(adapter, images())
    method = OptinMethod(md_rows=64)
    import pandas as pd

    from optin.methods.optin import combine
    raw = pd.concat([score_layer(adapter, teacher, layer, kind, method, seed=0, chunk=16)
                     for layer in range(adapter.num_layers) for kind in ("head", "neuron")])
    scores = combine(raw, method, adapter.num_layers)
    head_cost, neuron_cost = adapter.unit_macs(adapter.patch_grid(IMAGE))
    heads, neurons = adapter.unit_counts("head"), adapter.unit_counts("neuron")
    base = sum(h * c for h, c in zip(heads, head_cost)) + sum(n * c for n, c in zip(neurons, neuron_cost))
    for budget in (0.3, 0.6, 0.9):
        kept, info = search_mac(scores, budget=budget, head_cost=head_cost, neuron_cost=neuron_cost, base_macs=base,
                                heads_per_layer=heads, neurons_per_layer=neurons)
        slim = adapter_for(adapter.slim(kept))
        direct = flops.count_window_attention_macs(slim.layer_linear_shapes(), slim.block_geometry(adapter.patch_grid(IMAGE)))
        assert direct == pytest.approx(info["achieved_macs"], rel=1e-12)
        assert budget * base * 0.97 <= direct <= budget * base
