"""Slimmed Mask2Former with a Swin backbone whose blocks keep different numbers of heads and neurons.

Self-contained (torch + transformers only): `optin.arch.swin.Mask2FormerSwinAdapter.save_slim` copies
this file next to every saved slim checkpoint as `modeling_optin_mask2former.py`, so that
`AutoModelForUniversalSegmentation.from_pretrained(path, trust_remote_code=True)` rebuilds it without
optin. The config carries the kept heads / neurons of every Swin block, numbered across stages.
"""

import torch
from torch import nn
from transformers import Mask2FormerForUniversalSegmentation
from transformers.models.swin.modeling_swin import SwinRelativePositionBias


class ConstantBranch(nn.Module):
    """A sub-block with no unit left: it adds its output bias to every token."""

    def __init__(self, hidden_size, returns_tuple):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states, *args, **kwargs):
        # A fresh tensor, not a view of the parameter: views made under no_grad trip module hooks.
        out = torch.zeros_like(hidden_states) + self.bias
        return (out, None) if self.returns_tuple else out


def resize_block(block, head_dim, n_heads, n_neurons):
    hidden_size = block.layernorm_before.normalized_shape[0]
    attention = block.attention
    if n_heads == 0:
        block.attention = ConstantBranch(hidden_size, returns_tuple=True)
    else:
        width = n_heads * head_dim
        bias = attention.q_proj.bias is not None
        attention.q_proj = nn.Linear(hidden_size, width, bias=bias)
        attention.k_proj = nn.Linear(hidden_size, width, bias=bias)
        attention.v_proj = nn.Linear(hidden_size, width, bias=bias)
        attention.o_proj = nn.Linear(width, hidden_size)
        attention.num_attention_heads = n_heads
        attention.relative_position_bias = SwinRelativePositionBias(n_heads, attention.relative_position_bias.window_size)
    if n_neurons == 0:
        block.mlp = ConstantBranch(hidden_size, returns_tuple=False)
    else:
        block.mlp.fc1 = nn.Linear(hidden_size, n_neurons)
        block.mlp.fc2 = nn.Linear(n_neurons, hidden_size)


class OptinSlimMask2FormerForUniversalSegmentation(Mask2FormerForUniversalSegmentation):
    def __init__(self, config):
        super().__init__(config)
        swin = self.model.pixel_level_module.encoder.swin
        blocks = [block for stage in swin.encoder.layers for block in stage.blocks]
        backbone = config.backbone_config
        head_dim = backbone.embed_dim // backbone.num_heads[0]
        for block, n_heads, n_neurons in zip(
            blocks, config.optin_heads_per_layer, config.optin_neurons_per_layer, strict=True
        ):
            resize_block(block, head_dim, n_heads, n_neurons)
