"""Adapter for Llama decoder LMs (`LlamaForCausalLM`: SmolLM2, Llama 2/3, TinyLlama, ...).

Mistral and Qwen2 share the module layout; what each would add is stated in docs/llm.md (Qwen2's
q/k/v biases are sliced already; Mistral's sliding window would need the window in ``attention``), so
both stay outside SUPPORTED_MODEL_TYPES until a test covers them.

A layer is  x -> x + o_proj(Attn(rmsnorm1(x))) -> a -> a + down(silu(gate(h)) * up(h)), h = rmsnorm2(a),
with grouped-query attention: query head i reads KV head i // (H / K).

Units:
- ``head``: a query head (its rows of q_proj, its columns of o_proj). A KV group's k/v rows go when its
  last query head goes, so the cost of a head depends on what else is kept (``kv_cost`` in the search).
- ``neuron``: a group of ``channel_group`` consecutive MLP channels (gate and up rows, down columns);
  1 is the paper's per-neuron resolution. The group size is a setting of the prepared checkpoint
  (``config.optin_channel_group``), so every job of a run agrees on it.

Tap: the layer's output, the residual stream after the MLP (a pre-norm decoder has no other hidden
state that every later layer reads). Logits: the next-token logits at every position, [rows, vocab].
Calibration batches are packed token windows without padding, so every position is an MD row.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from torch.nn import functional as F

from optin.arch.base import EncoderAdapter, Kept, TokenLayout, load_sliced, no_spec

SLIM_MODEL_FILE = "modeling_optin_llama.py"
SUPPORTED_MODEL_TYPES = ("llama",)


def unsupported_reason(config) -> str | None:
    """Why this family cannot prune a model of ``config``, or None."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {model_type!r} is not supported by the llama family (supported: {list(SUPPORTED_MODEL_TYPES)})"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r}: the family's gated MLP is SiLU"
    if getattr(config, "mlp_bias", False):
        return "mlp_bias: the family's MLP has no biases"
    return None


def channel_group_error(intermediate_size: int, group: int) -> str | None:
    if group < 1 or intermediate_size % group:
        return f"channel_group {group} must be a positive divisor of the MLP width {intermediate_size}"
    return None


class LlamaAdapter(EncoderAdapter):
    family = "llama"

    def __init__(self, model):
        self.model = model.eval()
        self.core = model.model
        self.layers = self.core.layers
        self.config = model.config
        self.neuron_group = int(getattr(self.config, "optin_channel_group", 1))
        self._rope: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def handles(cls, model) -> bool:
        return (unsupported_reason(getattr(model, "config", None)) is None and hasattr(model, "lm_head")
                and hasattr(getattr(model, "model", None), "layers"))

    def weights_changed(self) -> None:
        self._rope.clear()

    # -- structure --------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.config.hidden_size // self.config.num_attention_heads

    @property
    def heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def kv_heads(self) -> int:
        return self.config.num_key_value_heads

    @property
    def group_size(self) -> int:
        """Query heads per KV head."""
        return self.heads // self.kv_heads

    @property
    def intermediate_size(self) -> int:
        return self.config.intermediate_size

    def unit_counts(self, kind: str) -> list[int]:
        """Per layer, read from the modules (a slim model's layers differ)."""
        if kind == "head":
            return [layer.self_attn.q_proj.out_features // self.head_dim for layer in self.layers]
        if kind == "neuron":
            return [layer.mlp.gate_proj.out_features // self.neuron_group for layer in self.layers]
        raise ValueError(f"unit kind must be 'head' or 'neuron', got {kind!r}")

    def _kv_index(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        """The KV head each query head of ``layer`` reads (a slim layer names them itself)."""
        attn = self.layers[layer].self_attn
        if hasattr(attn, "query_kv"):
            return torch.tensor(attn.query_kv, dtype=torch.long, device=like.device)
        return torch.arange(self.heads, device=like.device) // self.group_size

    def layer_linear_shapes(self) -> list[dict]:
        return [{"linears": [(lin.out_features, lin.in_features) for lin in (
            layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
            layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)],
            "attention_width": layer.self_attn.q_proj.out_features} for layer in self.layers]

    def channels(self, groups) -> list[int]:
        """MLP channel indices of the given channel groups."""
        g = self.neuron_group
        return [c for u in groups for c in range(u * g, (u + 1) * g)]

    def kept_kv(self, heads) -> list[int]:
        """KV heads a layer keeping query ``heads`` still needs."""
        return sorted({h // self.group_size for h in heads})

    # -- functional forward pieces -----------------------------------------------------------
    def embed(self, batch, rows=None):
        ids = batch["input_ids"]
        if "attention_mask" in batch and not bool(batch["attention_mask"].all()):
            raise ValueError("decoder calibration batches are packed token windows without padding")
        x = self.core.embed_tokens(ids)
        layout = TokenLayout.from_rows(torch.ones_like(ids, dtype=torch.bool), None)
        return layout.from_padded(x), layout

    def _rotary(self, t: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (t, like.dtype, like.device)
        if key not in self._rope:
            positions = torch.arange(t, device=like.device)[None]
            self._rope[key] = self.core.rotary_emb(like, positions)
        return self._rope[key]

    def attention(self, layer, x, layout, head_mask=None, per_head=False):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        block = self.layers[layer]
        attn = block.self_attn
        n, t, dh = layout.n, layout.t, self.head_dim
        h = block.input_layernorm(x)
        q = attn.q_proj(h).view(n, t, -1, dh).transpose(1, 2)
        k = attn.k_proj(h).view(n, t, -1, dh).transpose(1, 2)
        v = attn.v_proj(h).view(n, t, -1, dh).transpose(1, 2)
        if q.shape[1] == 0:  # a slim layer without heads: the residual alone
            resid = x if attn.o_proj.bias is None else x + attn.o_proj.bias
            return resid, (x.new_zeros(0, *x.shape) if per_head else None)
        cos, sin = self._rotary(t, x)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        kv_index = self._kv_index(layer, x)
        k, v = k.index_select(1, kv_index), v.index_select(1, kv_index)
        context = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling)  # [N, H, T, dh]
        if head_mask is not None:
            context = context * head_mask.view(1, -1, 1, 1)
        merged = context.transpose(1, 2).reshape(n * t, -1)
        resid = x + attn.o_proj(merged)
        head_out = None
        if per_head:
            w = attn.o_proj.weight.view(attn.o_proj.out_features, -1, dh)
            head_out = torch.einsum("rhc,dhc->hrd", merged.view(len(merged), -1, dh), w)
        return resid, head_out

    def after_attention(self, layer, attn_resid):
        return attn_resid

    def ffn(self, layer, a, neuron_mask=None):
        mlp = self.layers[layer].mlp
        h = self.layers[layer].post_attention_layernorm(a)
        act = F.silu(mlp.gate_proj(h)) * mlp.up_proj(h)
        if neuron_mask is not None:
            act = act * neuron_mask.repeat_interleave(self.neuron_group)
        return F.linear(act, mlp.down_proj.weight), act

    def neuron_directions(self, layer):
        return self.layers[layer].mlp.down_proj.weight.t()

    def after_ffn(self, layer, a, ffn_out):
        bias = self.layers[layer].mlp.down_proj.bias
        return a + ffn_out if bias is None else a + ffn_out + bias

    def layer_tap(self, layer, x, a, ffn_out):
        return self.after_ffn(layer, a, ffn_out)

    def logits(self, h, layout):
        return self.model.lm_head(self.core.norm(h))

    def projections(self, layer: int) -> dict[str, torch.nn.Linear]:
        """The layer's Linear modules by role (the peers' formulas read their weights)."""
        attn, mlp = self.layers[layer].self_attn, self.layers[layer].mlp
        return {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj, "o": attn.o_proj,
                "gate": mlp.gate_proj, "up": mlp.up_proj, "down": mlp.down_proj}

    @torch.no_grad()
    def projection_inputs(self, batch) -> list[dict[str, torch.Tensor]]:
        """Per layer, the unpruned model's inputs of o_proj (the heads' context vectors, [R, H * dh])
        and of down_proj (the channels' activations, [R, I]) on ``batch``: what FLAP, Wanda-sp and
        Minitron measure."""
        x, layout = self.embed(batch)
        out = []
        for layer in range(self.num_layers):
            captured = {}
            hook = self.layers[layer].self_attn.o_proj.register_forward_hook(
                lambda module, args, output: captured.__setitem__("o", args[0].detach()))
            try:
                resid, _ = self.attention(layer, x, layout)
            finally:
                hook.remove()
            a = self.after_attention(layer, resid)
            ffn_out, act = self.ffn(layer, a)
            x = self.after_ffn(layer, a, ffn_out)
            out.append({"o": captured["o"], "down": act})
        return out

    def layer_prefix(self, layer: int) -> str:
        return f"model.layers.{layer}."

    def unit_weight_norms(self, kind: str) -> list[torch.Tensor]:
        """L1 norms of the weights a unit owns: a query head's q rows and o columns (its KV group's
        k/v are shared, so they do not count); a channel group's gate and up rows and down columns."""
        norms = []
        for layer in self.layers:
            if kind == "head":
                dh = self.head_dim
                q = layer.self_attn.q_proj.weight.abs().sum(1).view(-1, dh).sum(1)
                o = layer.self_attn.o_proj.weight.abs().sum(0).view(-1, dh).sum(1)
                norms.append((q + o).double())
            elif kind == "neuron":
                mlp = layer.mlp
                per_channel = (mlp.gate_proj.weight.abs().sum(1) + mlp.up_proj.weight.abs().sum(1)
                               + mlp.down_proj.weight.abs().sum(0))
                norms.append(per_channel.view(-1, self.neuron_group).sum(1).double())
            else:
                raise ValueError(f"unit kind must be 'head' or 'neuron', got {kind!r}")
        return [n.detach() for n in norms]

    # -- physical slimming -------------------------------------------------------------------
    def slim_config(self, kept: Kept):
        config = copy.deepcopy(self.config)
        query_kv, intermediate = [], []
        for heads, groups in zip(kept["head"], kept["neuron"], strict=True):
            kv = self.kept_kv(heads)
            query_kv.append([kv.index(h // self.group_size) for h in heads])
            intermediate.append(len(groups) * self.neuron_group)
        config.optin_query_kv = query_kv
        config.optin_intermediate = intermediate
        # FLAP's bias compensation gives o_proj and down_proj an output bias (optin.methods.llm_peers)
        config.optin_output_bias = self.layers[0].self_attn.o_proj.bias is not None
        config.head_dim = self.head_dim
        config.architectures = ["OptinSlimLlamaForCausalLM"]
        config.auto_map = {"AutoModelForCausalLM": f"{SLIM_MODEL_FILE[:-3]}.OptinSlimLlamaForCausalLM"}
        for key in ("quantization_config",):  # the slim weights are plain float tensors
            if hasattr(config, key):
                delattr(config, key)
        return config

    def slim(self, kept: Kept):
        """An `OptinSlimLlamaForCausalLM` holding only the kept query heads, the KV heads they read
        and the kept channel groups; embeddings stay tied when they were."""
        from optin.arch import llama_slim_model

        config = self.slim_config(kept)
        with torch.device(self.device):
            # in the dense model's dtype: a float64 copy verifies slim = masked without float32 rounding
            slim = llama_slim_model.OptinSlimLlamaForCausalLM(config).to(next(self.model.parameters()).dtype).eval()
        source = self.model.state_dict()
        target = {name: source.get(name) for name in slim.state_dict()}
        dh = self.head_dim
        for index, (heads, groups) in enumerate(zip(kept["head"], kept["neuron"], strict=True)):
            prefix = f"model.layers.{index}."
            q_rows = torch.tensor([h * dh + c for h in heads for c in range(dh)], dtype=torch.long, device=self.device)
            kv_rows = torch.tensor([k * dh + c for k in self.kept_kv(heads) for c in range(dh)], dtype=torch.long,
                                   device=self.device)
            channels = torch.tensor(self.channels(groups), dtype=torch.long, device=self.device)
            attn, mlp = prefix + "self_attn.", prefix + "mlp."
            for proj, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
                target[f"{attn}{proj}.weight"] = source[f"{attn}{proj}.weight"][rows]
                if f"{attn}{proj}.bias" in target:
                    target[f"{attn}{proj}.bias"] = source[f"{attn}{proj}.bias"][rows]
            target[f"{attn}o_proj.weight"] = source[f"{attn}o_proj.weight"][:, q_rows]
            for proj in ("gate_proj", "up_proj"):
                target[f"{mlp}{proj}.weight"] = source[f"{mlp}{proj}.weight"][channels]
            target[f"{mlp}down_proj.weight"] = source[f"{mlp}down_proj.weight"][:, channels]
        if "lm_head.weight" in target and target["lm_head.weight"] is None:
            target["lm_head.weight"] = source["model.embed_tokens.weight"]
        slim = load_sliced(slim, target)
        if getattr(config, "tie_word_embeddings", False):
            slim.tie_weights()
        return slim

    @staticmethod
    def save_slim(slim_model, path: str | Path, *, tokenizer=None, **spec) -> None:
        """Save so that AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True) rebuilds it,
        with its tokenizer when one is given."""
        from optin.arch import llama_slim_model

        no_spec(spec, "llama")
        path = Path(path)
        slim_model.save_pretrained(path)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        shutil.copyfile(llama_slim_model.__file__, path / SLIM_MODEL_FILE)


def in_float64(model):
    """A float64 copy of a (dense or slim) Llama whose RMSNorms also normalise in float64.

    HF's LlamaRMSNorm always normalises in float32, so two float64 models that compute the same
    function in a different order (masked vs slim) still round differently there, and 30 layers
    amplify it (1e-4 on a heavily pruned SmolLM2). Verification copies only: a model's own
    forward is left as released."""
    import types

    out = copy.deepcopy(model).double()

    def exact_rms_norm(norm, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return norm.weight * (hidden_states * torch.rsqrt(variance + norm.variance_epsilon))

    for module in out.modules():
        if type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(exact_rms_norm, module)
    return out


def block_macs(model, context: int) -> float:
    """MACs of a (slim or dense) Llama's decoder layers on one sequence of ``context`` tokens, counted
    from weight shapes: every projection once per token, and causal attention's QK^T and PV over the
    c(c+1)/2 (query, key) pairs per kept query head. Embedding lookup, RMSNorm, RoPE and the LM head
    are not counted (the LM head: ``lm_head_macs``)."""
    total = 0.0
    dh = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    pairs = context * (context + 1) / 2
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            total += context * lin.in_features * lin.out_features
        total += 2 * pairs * attn.q_proj.out_features  # (heads x dh) per pair, QK^T and PV
    return total


def lm_head_macs(model, context: int) -> float:
    return float(context * model.lm_head.in_features * model.lm_head.out_features)


def unit_macs(config, context: int, channel_group: int) -> dict:
    """optin.engine.flops.llm_unit_macs for a model config."""
    from optin.engine.flops import llm_unit_macs

    d = config.hidden_size
    return llm_unit_macs(d, getattr(config, "head_dim", None) or d // config.num_attention_heads, context, channel_group)


ADAPTER_CLASSES = (LlamaAdapter,)
