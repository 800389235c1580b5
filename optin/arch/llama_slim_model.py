"""Slimmed Llama-family causal LM with per-layer query heads, KV groups and MLP widths.

Self-contained (torch + transformers only): `optin.arch.llama.LlamaAdapter.slim` copies it next to
every saved slim checkpoint as `modeling_optin_llama.py`, so that
`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` rebuilds the slim architecture
without optin installed; `generate` works with the usual KV cache.

A layer may keep a different number of query heads per KV group (GQA): `config.optin_query_kv[l]`
names, for each kept query head, the kept KV head it reads. transformers' attention repeats each KV
head a fixed number of times, so K/V are gathered per query head here instead.
"""

import copy

import torch
from torch import nn
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import (
    ALL_ATTENTION_FUNCTIONS,
    LlamaMLP,
    apply_rotary_pos_emb,
    eager_attention_forward,
)


class OptinSlimLlamaAttention(nn.Module):
    def __init__(self, config, layer_idx: int, query_kv: list[int]):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.num_key_value_groups = 1  # K/V already gathered per query head
        heads = len(query_kv)
        kv_heads = max(query_kv) + 1 if query_kv else 0
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * self.head_dim, config.hidden_size,
                                bias=bias or getattr(config, "optin_output_bias", False))
        # a plain list, not a buffer: from_pretrained builds modules on the meta device and fills
        # only what the state dict holds
        self.query_kv = list(query_kv)

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        if past_key_values is not None:
            # a layer without heads caches empty K/V, so the cache still knows the sequence length
            key, value = past_key_values.update(key, value, self.layer_idx)
        if len(self.query_kv) == 0:
            return self.o_proj(hidden_states.new_zeros(*input_shape, 0)), None
        index = torch.tensor(self.query_kv, dtype=torch.long, device=key.device)
        key, value = key.index_select(1, index), value.index_select(1, index)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, weights = interface(self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs)
        return self.o_proj(out.reshape(*input_shape, -1).contiguous()), weights


class OptinSlimLlamaForCausalLM(LlamaForCausalLM):
    """LlamaForCausalLM whose layers keep `optin_query_kv[l]` heads and `optin_intermediate[l]` MLP
    channels."""

    def __init__(self, config):
        super().__init__(config)
        for index, layer in enumerate(self.model.layers):
            layer.self_attn = OptinSlimLlamaAttention(config, index, config.optin_query_kv[index])
            mlp_config = copy.copy(config)
            mlp_config.intermediate_size = config.optin_intermediate[index]
            layer.mlp = LlamaMLP(mlp_config)
            if getattr(config, "optin_output_bias", False):  # FLAP's bias compensation
                layer.mlp.down_proj = nn.Linear(mlp_config.intermediate_size, config.hidden_size, bias=True)
        self.post_init()
