"""One tiny model of every family with a calibration batch, for the tests that run every family
the same way (tests/test_devices.py on the CPU, tests/test_gpu.py on a GPU)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from conftest import padded_batch, tiny_bert
from optin.arch import Kept
from test_cnn import pixels as cnn_pixels
from test_cnn import tiny_resnet, tiny_vgg
from test_llama import KEPT as LLAMA_KEPT
from test_llama import tiny_llama, token_batch
from test_swin import images as swin_images
from test_swin import tiny_mask2former
from test_vit import hf_model, timm_model
from test_vit import images as vit_images


@dataclass(frozen=True)
class FamilyCase:
    build: Callable[[], torch.nn.Module]
    batch: Callable[[], dict[str, torch.Tensor]]
    kinds: tuple[str, ...]          # unit kinds the engine scores for this family
    kept: Kept                      # a selection for slim = masked


FAMILIES = {
    "bert": FamilyCase(lambda: tiny_bert(layers=2), padded_batch, ("head", "neuron"),
                       Kept.of(head=((0, 2), (1,)), neuron=(tuple(range(0, 48, 3)), ()))),
    "vit": FamilyCase(lambda: hf_model("deit"), lambda: vit_images(28), ("head", "neuron", "token"),
                      Kept.of(head=((0, 2), (), (1, 2, 3)), neuron=((), tuple(range(10)), (5, 7)))),
    "vit_timm": FamilyCase(timm_model, lambda: vit_images(32), ("head", "neuron", "token"),
                           Kept.of(head=((0, 2), (3,), (1, 2, 3)), neuron=((1,), tuple(range(10)), (5, 7)))),
    "mask2former_swin": FamilyCase(tiny_mask2former, lambda: swin_images(2), ("head", "neuron"),
                                   Kept.of(head=((0,), (0,), (1,), (0, 1), (0, 2, 3), (), (1, 2, 5, 7), (0,)),
                                           neuron=(tuple(range(5)), (3, 9), (), tuple(range(0, 48, 2)), (1,),
                                                   tuple(range(50)), (), (4, 100)))),
    "cifar_resnet": FamilyCase(tiny_resnet, lambda: {"pixel_values": cnn_pixels("resnet")}, ("channel",),
                               Kept.of(channel=[[0, 2], [1, 3], [0, 5, 7], [1, 2, 3, 4], [0, 8, 15], [2, 3]])),
    # GQA: 4 query heads on 2 KV heads, MLP channels in groups of 4
    "llama": FamilyCase(lambda: tiny_llama(channel_group=4), token_batch, ("head", "neuron"), LLAMA_KEPT),
    "vgg": FamilyCase(tiny_vgg, lambda: {"pixel_values": cnn_pixels("vgg_bn")}, ("channel",),
                      Kept.of(channel=[[0, 3], [1, 2, 5], [0, 4], [3, 6]])),
}


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
