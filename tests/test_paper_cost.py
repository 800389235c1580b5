"""The GPU-time estimate of docs/paper-run.md: the anchor reproduces itself, unit counts and MACs
match the models' own counts."""

from pathlib import Path

import yaml

from optin.tools import paper_cost

PAPER = Path(__file__).resolve().parents[1] / "workflow/configs/paper.yaml"


def test_the_anchor_shape_gives_the_measured_time_per_unit():
    anchor = paper_cost.ANCHOR
    paper = {"run": {"experiments": ["x"], "methods": ["optin"]}, "calibration": {"n": anchor["examples"]},
             "methods": {"optin": {"semantics": "paper"}},
             "experiments": {"x": {"model": "bert_base_x", "mac_seq_len": anchor["real_tokens"] / anchor["examples"]}}}
    # 1,912 / 128 = 14.9 tokens: the bench's real rows, padded length rounded (15 vs 23) moves only the small attention term
    row = paper_cost.estimates(paper)[0]
    assert row["units"] == 12 * (12 + 3072) == 37_008
    assert abs(row["ms_per_unit"] - paper_cost.ANCHOR_MS_PER_UNIT) < 0.05 * paper_cost.ANCHOR_MS_PER_UNIT


def test_cnn_layer_macs_match_the_built_networks_count():
    import torch

    from optin.models.cnn import count_conv_linear_macs
    from optin.models.cnn import build_convnet

    paper = yaml.safe_load(PAPER.read_text())
    x = torch.zeros(1, 3, 32, 32)
    for name, layers in (("vgg16_bn_cifar10", paper_cost.vgg16_bn_cifar()), ("resnet56_cifar10", paper_cost.resnet56_cifar())):
        source = paper["models"][name]["source"]
        model = build_convnet({**source["convnet_config"], "num_labels": 10})
        macs, units = layers
        assert len(units) == paper["models"][name]["num_layers"]
        counted = count_conv_linear_macs(model, x)
        # the prunable layers' MACs: all but the stem / shortcuts / output layer, which are small
        assert 0.97 * counted < sum(macs) <= counted, name
