"""Adapter for BERT-style HF encoders (`BertForSequenceClassification`, post-LayerNorm).

Tap (authors' code): output of `encoder.layer.k.output.dense`, the FFN down-projection before
dropout, residual and LayerNorm. Head h masked = its attention probabilities times 0, i.e. its
context vector is zero; neuron j masked = its activation is zero.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from torch.nn import functional as F

from optin.arch.base import BlockNames, EncoderAdapter, Kept, TokenLayout, load_sliced, no_spec, slice_layer

SLIM_MODEL_FILE = "modeling_optin_bert.py"
BERT_NAMES = BlockNames(
    qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
    out="attention.output.dense", up="intermediate.dense", down="output.dense",
    attention_bypass={"attention.bias": "attention.output.dense.bias",
                      "attention.LayerNorm.weight": "attention.output.LayerNorm.weight",
                      "attention.LayerNorm.bias": "attention.output.LayerNorm.bias"},
    ffn_bypass={"output.bias": "output.dense.bias"},
)


class BertAdapter(EncoderAdapter):
    family = "bert"

    block_names = BERT_NAMES

    def __init__(self, model):
        self.model = model.eval()
        self.bert = model.bert
        self.layers = self.bert.encoder.layer
        self.config = model.config
        self._qkv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def weights_changed(self) -> None:
        self._qkv.clear()

    def _fused_qkv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Q, K and V projections as one GEMM (one matmul and one scatter instead of three)."""
        if layer not in self._qkv:
            attn = self.layers[layer].attention.self
            projections = (attn.query, attn.key, attn.value)
            self._qkv[layer] = (
                torch.cat([p.weight for p in projections]).detach(),
                torch.cat([p.bias for p in projections]).detach(),
            )
        return self._qkv[layer]

    @classmethod
    def handles(cls, model) -> bool:
        return hasattr(model, "bert") and hasattr(getattr(model.bert, "encoder", None), "layer")

    # -- structure --------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def head_dim(self) -> int:
        return self.config.hidden_size // self.config.num_attention_heads

    # Structural checks, not isinstance: a reloaded slim model's bypass modules are instances of
    # the remote-code copy of bert_slim_model, a different class object.
    @staticmethod
    def _has_attention(layer) -> bool:
        return hasattr(layer.attention, "self")

    @staticmethod
    def _has_ffn(layer) -> bool:
        return hasattr(layer.output, "dense")

    def unit_counts(self, kind: str) -> list[int]:
        if kind == "head":
            return [
                layer.attention.self.query.out_features // self.head_dim if self._has_attention(layer) else 0
                for layer in self.layers
            ]
        if kind == "neuron":
            return [
                layer.intermediate.dense.out_features if self._has_ffn(layer) else 0 for layer in self.layers
            ]
        raise ValueError(f"unit kind must be 'head' or 'neuron', got {kind!r}")

    def layer_linear_shapes(self) -> list[dict]:
        shapes = []
        for layer in self.layers:
            linears, width = [], 0
            if self._has_attention(layer):
                attn = layer.attention.self
                for lin in (attn.query, attn.key, attn.value, layer.attention.output.dense):
                    linears.append((lin.out_features, lin.in_features))
                width = attn.query.out_features
            if self._has_ffn(layer):
                for lin in (layer.intermediate.dense, layer.output.dense):
                    linears.append((lin.out_features, lin.in_features))
            shapes.append({"linears": linears, "attention_width": width})
        return shapes

    # -- functional forward pieces -----------------------------------------------------------
    def embed(self, batch, rows=None):
        x = self.bert.embeddings(
            input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids")
        )
        keep = batch["attention_mask"]
        key_mask = None
        if not bool(keep.all()):
            key_mask = (1.0 - keep.to(x.dtype))[:, None, None, :] * torch.finfo(x.dtype).min
        layout = TokenLayout.from_rows(torch.ones_like(keep, dtype=torch.bool) if rows is None else rows, key_mask)
        return layout.from_padded(x), layout

    def attention(self, layer, x, layout, head_mask=None, per_head=False):
        block = self.layers[layer]
        if not self._has_attention(block):
            return x + block.attention.bias, None
        attn = block.attention.self
        dh = self.head_dim
        qkv = layout.to_padded(F.linear(x, *self._fused_qkv(layer)))  # [N, T, 3 * H * dh]
        q, k, v = qkv.view(layout.n, layout.t, 3, -1, dh).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.key_mask, scale=attn.scaling)
        if head_mask is not None:
            context = context * head_mask.view(1, -1, 1, 1)
        merged = layout.from_padded(context.transpose(1, 2))  # [R, H * dh]
        out_proj = block.attention.output.dense
        resid = x + out_proj(merged)
        head_out = None
        if per_head:
            w = out_proj.weight.view(out_proj.out_features, -1, dh)  # [D, H, dh]
            head_out = torch.einsum("rhc,dhc->hrd", merged.view(len(merged), -1, dh), w)
        return resid, head_out

    def after_attention(self, layer, attn_resid):
        block = self.layers[layer]
        norm = block.attention.output.LayerNorm if self._has_attention(block) else block.attention.LayerNorm
        return norm(attn_resid)

    def ffn(self, layer, a, neuron_mask=None):
        block = self.layers[layer]
        if not self._has_ffn(block):
            return torch.zeros_like(a), a.new_zeros(*a.shape[:-1], 0)
        act = block.intermediate.intermediate_act_fn(block.intermediate.dense(a))
        if neuron_mask is not None:
            act = act * neuron_mask
        down = block.output.dense
        return F.linear(act, down.weight), act

    def neuron_directions(self, layer):
        return self.layers[layer].output.dense.weight.t()

    def after_ffn(self, layer, a, ffn_out):
        block = self.layers[layer]
        if not self._has_ffn(block):
            return block.output.LayerNorm(a + block.output.bias)
        return block.output.LayerNorm(a + ffn_out + block.output.dense.bias)

    def layer_tap(self, layer, x, a, ffn_out):
        # FFN down-projection output, bias included (the hooked nn.Linear's output).
        block = self.layers[layer]
        if not self._has_ffn(block):
            return ffn_out + block.output.bias
        return ffn_out + block.output.dense.bias

    def logits(self, h, layout):
        first = h[layout.first_rows]
        pooler = self.bert.pooler
        pooled = pooler.activation(pooler.dense(first)) if pooler is not None else first
        return self.model.classifier(pooled)

    def layer_prefix(self, layer: int) -> str:
        return f"bert.encoder.layer.{layer}."

    # -- physical slimming -------------------------------------------------------------------
    def slim(self, kept: Kept):
        """A `OptinSlimBertForSequenceClassification` holding only the kept heads and neurons."""
        from optin.arch import bert_slim_model  # transformers' model code: only the jobs that slim pay for it

        config = copy.deepcopy(self.config)
        heads, neurons = kept.counts("head"), kept.counts("neuron")
        config.optin_heads_per_layer = heads
        config.optin_neurons_per_layer = neurons
        config.architectures = ["OptinSlimBertForSequenceClassification"]
        config.auto_map = {
            "AutoModelForSequenceClassification": f"{SLIM_MODEL_FILE[:-3]}.OptinSlimBertForSequenceClassification"
        }
        with torch.device(self.device):  # the slim model next to the dense one
            slim = bert_slim_model.OptinSlimBertForSequenceClassification(config).eval()
        source = self.model.state_dict()
        target = {}
        dh = self.head_dim
        for name in slim.state_dict():
            target[name] = source.get(name)
        for index, (block_heads, block_neurons) in enumerate(zip(kept["head"], kept["neuron"], strict=True)):
            slice_layer(source, target, self.layer_prefix(index), BERT_NAMES, block_heads, block_neurons, dh)
        return load_sliced(slim, target)

    @staticmethod
    def save_slim(slim_model, path: str | Path, *, tokenizer=None, **spec) -> None:
        """Save so that AutoModelForSequenceClassification.from_pretrained(path,
        trust_remote_code=True) rebuilds it, with its tokenizer when one is given."""
        from optin.arch import bert_slim_model

        no_spec(spec, "bert")
        path = Path(path)
        slim_model.save_pretrained(path)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        shutil.copyfile(bert_slim_model.__file__, path / SLIM_MODEL_FILE)


ADAPTER_CLASSES = (BertAdapter,)
