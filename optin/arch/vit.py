"""Adapters for pre-LayerNorm vision transformers: HF ViT / DeiT / DINOv2 classifiers and timm ViT / DeiT.

A block is  x -> x + g1 * Attn(norm1(x)) -> a -> a + g2 * MLP(norm2(a))  with optional LayerScale
g1, g2. The two module layouts differ only in names (HF 5.x: `q/k/v/o_proj`, `mlp.fc1/fc2`,
`layernorm_before/after` or DINOv2's `norm1/norm2` + `layer_scale*`; timm: fused `attn.qkv`,
`attn.proj`, `ls1/ls2`), so each layout builds one `BlockView` per layer and the functional
forward is shared.

Tap (authors' code): `layernorm_before` of layer k, the normalised stream entering layer k. A unit
of the last layer changes none of those; `output_tap` (the final LayerNorm) is what it changes.
Tokens (OPTIN-tau): token p removed from the input of layer l is scored like a unit of layer l.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from optin.arch import vit_slim_model
from optin.arch.base import BlockNames, EncoderAdapter, Kept, TokenLayout, load_sliced, no_spec, slice_layer

SLIM_MODEL_FILE = "modeling_optin_vit.py"
TIMM_SLIM_SPEC = "optin_timm_slim.json"
HF_VIT_NAMES = BlockNames(
    qkv=("attention.q_proj", "attention.k_proj", "attention.v_proj"), out="attention.o_proj",
    up="mlp.fc1", down="mlp.fc2",
    attention_bypass={"attention.bias": "attention.o_proj.bias"}, ffn_bypass={"mlp.bias": "mlp.fc2.bias"},
)


@dataclass
class BlockView:
    """One block's modules, whatever they are called."""

    norm1: nn.Module
    norm2: nn.Module
    qkv: tuple[torch.Tensor, torch.Tensor | None] | None   # fused [3W, D] weight and bias; None: no heads
    scaling: float
    o_proj: nn.Module | None                               # Linear, or a constant branch (its .bias)
    fc1: nn.Linear | None
    fc2: nn.Module | None
    act: nn.Module
    gamma1: torch.Tensor | None
    gamma2: torch.Tensor | None


class VisionTransformerAdapter(EncoderAdapter):
    """Shared functional forward; subclasses provide the layout (views, embed, pooling, slimming)."""

    final_tap_is_output = True
    prefix_tokens = 1

    def __init__(self, model):
        self.model = model.eval()
        self.views = [self._view(i) for i in range(self.num_layers)]

    def weights_changed(self) -> None:
        # the views hold fused Q/K/V copies of the weights, stale after a cast (Kwon et al.'s tuning runs in float64)
        self.views = [self._view(i) for i in range(self.num_layers)]

    # -- layout hooks --------------------------------------------------------------------------
    def _view(self, index: int) -> BlockView:
        raise NotImplementedError

    def _pool(self, h: torch.Tensor, layout: TokenLayout, size: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits from final-norm rows; ``size`` [N, T] weights merged tokens in patch means."""
        raise NotImplementedError

    def pixel_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- structure -----------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads_dense

    def unit_counts(self, kind: str) -> list[int]:
        if kind == "head":
            return [0 if v.qkv is None else v.qkv[0].shape[0] // (3 * self.head_dim) for v in self.views]
        if kind == "neuron":
            return [0 if v.fc1 is None else v.fc1.out_features for v in self.views]
        raise ValueError(f"unit kind must be 'head' or 'neuron' (tokens depend on the input), got {kind!r}")

    def layer_linear_shapes(self) -> list[dict]:
        shapes = []
        for v in self.views:
            linears, width = [], 0
            if v.qkv is not None:
                w = v.qkv[0]
                width = w.shape[0] // 3
                linears += [(width, w.shape[1])] * 3 + [(v.o_proj.out_features, v.o_proj.in_features)]
            if v.fc1 is not None:
                linears += [(v.fc1.out_features, v.fc1.in_features), (v.fc2.out_features, v.fc2.in_features)]
            shapes.append({"linears": linears, "attention_width": width})
        return shapes

    # -- functional forward ----------------------------------------------------------------------
    def embed(self, batch, rows=None):
        x = self.pixel_embeddings(batch["pixel_values"])
        n, t, _ = x.shape
        layout = TokenLayout.from_rows(torch.ones(n, t, dtype=torch.bool, device=x.device) if rows is None else rows, None)
        return layout.from_padded(x), layout

    @staticmethod
    def _scaled(x: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
        return x if gamma is None else x * gamma

    def attention(self, layer, x, layout, head_mask=None, per_head=False):
        v = self.views[layer]
        if v.qkv is None:
            return x + self._scaled(v.o_proj.bias, v.gamma1), None
        dh = self.head_dim
        qkv = F.linear(v.norm1(x), *v.qkv)
        mask = layout.key_mask
        if layout.index is None:
            q, k, val = qkv.view(layout.n, layout.t, 3, -1, dh).permute(2, 0, 3, 1, 4)
        else:
            # Rows missing from a sequence (a removed token) must not be attended to.
            q, k, val = layout.to_padded(qkv).view(layout.n, layout.t, 3, -1, dh).permute(2, 0, 3, 1, 4)
            missing = torch.ones(layout.n * layout.t, dtype=torch.bool, device=x.device)
            missing[layout.index] = False
            absent = missing.view(layout.n, 1, 1, layout.t).to(x.dtype) * torch.finfo(x.dtype).min
            mask = absent if mask is None else mask + absent
        context = F.scaled_dot_product_attention(q, k, val, attn_mask=mask, scale=v.scaling)
        if head_mask is not None:
            context = context * head_mask.view(1, -1, 1, 1)
        merged = layout.from_padded(context.transpose(1, 2))
        resid = x + self._scaled(v.o_proj(merged), v.gamma1)
        head_out = None
        if per_head:
            w = v.o_proj.weight.view(v.o_proj.out_features, -1, dh)
            head_out = self._scaled(torch.einsum("rhc,dhc->hrd", merged.view(len(merged), -1, dh), w), v.gamma1)
        return resid, head_out

    def after_attention(self, layer, attn_resid):
        return attn_resid

    def ffn(self, layer, a, neuron_mask=None):
        v = self.views[layer]
        if v.fc1 is None:
            return torch.zeros_like(a), a.new_zeros(*a.shape[:-1], 0)
        act = v.act(v.fc1(v.norm2(a)))
        if neuron_mask is not None:
            act = act * neuron_mask
        return self._scaled(F.linear(act, v.fc2.weight), v.gamma2), act

    def neuron_directions(self, layer):
        v = self.views[layer]
        return self._scaled(v.fc2.weight.t(), v.gamma2)

    def after_ffn(self, layer, a, ffn_out):
        return a + ffn_out + self._scaled(self.views[layer].fc2.bias, self.views[layer].gamma2)

    def layer_tap(self, layer, x, a, ffn_out):
        return self.views[layer].norm1(x)

    def output_tap(self, h):
        return self.final_norm(h)

    def logits(self, h, layout):
        return self._pool(self.final_norm(h), layout)

    def _patch_mean(self, h: torch.Tensor, layout: TokenLayout, size: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the patch tokens present in each image (a removed token does not count), each
        weighted by the tokens it stands for (``size`` [N, T], after merging)."""
        padded = layout.to_padded(h)[:, self.prefix_tokens:]
        weight = torch.ones(layout.n * layout.t, dtype=h.dtype, device=h.device)
        if layout.index is not None:
            weight.zero_()[layout.index] = 1.0
        weight = weight.view(layout.n, layout.t)
        if size is not None:
            weight = weight * size
        weight = weight[:, self.prefix_tokens:].unsqueeze(-1)
        return (padded * weight).sum(1) / weight.sum(1)

    def _cls(self, h: torch.Tensor, layout: TokenLayout, token: int = 0) -> torch.Tensor:
        return h[layout.first_rows + token]

    # -- token merging at inference (OPTIN-tau) --------------------------------------------------
    @torch.no_grad()
    def forward_merged(self, batch, merges: list[int], head_masks=None, neuron_masks=None,
                       token_counts: list[int] | None = None) -> torch.Tensor:
        """Logits with ``merges[l]`` tokens merged (ToMe) before layer l; merges of 0 are the plain
        forward. ``token_counts``, if given, receives the tokens each layer ran on."""
        x = self.pixel_embeddings(batch["pixel_values"])
        n, t, d = x.shape
        size = torch.ones(n, t, dtype=x.dtype, device=x.device)
        for layer, r in enumerate(merges):
            if r:
                x, size = vit_slim_model.bipartite_merge(x, size, r, self.prefix_tokens)
            if token_counts is not None:
                token_counts.append(x.shape[1])
            merged = bool((size != 1).any())
            layout = TokenLayout.from_rows(torch.ones(x.shape[:2], dtype=torch.bool, device=x.device),
                                           vit_slim_model.size_bias(size) if merged else None)
            hm = head_masks[layer] if head_masks is not None else None
            nm = neuron_masks[layer] if neuron_masks is not None else None
            rows, _ = self.layer(layer, x.reshape(-1, d), layout, hm, nm)
            x = rows.view(n, -1, d)
        h = self.final_norm(x)
        return self._pool_sized(h, size)

    def _pool_sized(self, h: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        layout = TokenLayout.from_rows(torch.ones(h.shape[:2], dtype=torch.bool, device=h.device), None)
        return self._pool(h.reshape(-1, h.shape[-1]), layout, size)


class HfVitAdapter(VisionTransformerAdapter):
    """HF ViTForImageClassification, DeiTForImageClassification(+WithTeacher), Dinov2ForImageClassification."""

    family = "vit"
    BACKBONES = ("vit", "deit", "dinov2")

    def __init__(self, model):
        self.backbone_name = next(name for name in self.BACKBONES if hasattr(model, name))
        self.backbone = getattr(model, self.backbone_name)
        # transformers 5 ViT/DeiT keep `layers`; DINOv2 keeps `encoder.layer`.
        self.layers_path = "layers" if hasattr(self.backbone, "layers") else "encoder.layer"
        self.layers = self.backbone.get_submodule(self.layers_path)
        self.config = model.config
        self.prefix_tokens = 2 if self.backbone_name == "deit" else 1
        if getattr(self.config, "use_swiglu_ffn", False):
            raise TypeError("DINOv2 with a SwiGLU FFN is not supported (its neurons are gated pairs)")
        super().__init__(model)

    @classmethod
    def handles(cls, model) -> bool:
        classifier = any(hasattr(model, c) for c in ("classifier", "cls_classifier"))
        return classifier and any(hasattr(model, name) for name in cls.BACKBONES)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_heads_dense(self) -> int:
        return self.config.num_attention_heads

    @property
    def final_norm(self):
        return self.backbone.layernorm

    def _view(self, index):
        layer = self.layers[index]
        dino = self.backbone_name == "dinov2"
        attn = layer.attention
        has_heads = hasattr(attn, "q_proj")
        has_mlp = hasattr(layer.mlp, "fc1")
        qkv = None
        if has_heads:
            projections = (attn.q_proj, attn.k_proj, attn.v_proj)
            bias = None if attn.q_proj.bias is None else torch.cat([p.bias for p in projections]).detach()
            qkv = (torch.cat([p.weight for p in projections]).detach(), bias)
        return BlockView(
            norm1=layer.norm1 if dino else layer.layernorm_before,
            norm2=layer.norm2 if dino else layer.layernorm_after,
            qkv=qkv,
            scaling=attn.scaling if has_heads else 1.0,
            o_proj=attn.o_proj if has_heads else attn,
            fc1=layer.mlp.fc1 if has_mlp else None,
            fc2=layer.mlp.fc2 if has_mlp else layer.mlp,
            act=layer.mlp.activation_fn if has_mlp else nn.Identity(),
            gamma1=layer.layer_scale1.lambda1 if dino else None,
            gamma2=layer.layer_scale2.lambda1 if dino else None,
        )

    def pixel_embeddings(self, pixel_values):
        if self.backbone_name == "dinov2":
            return self.backbone.embeddings(pixel_values)
        return self.backbone.embeddings(pixel_values, interpolate_pos_encoding=True)

    def _pool(self, h, layout, size=None):
        m = self.model
        if self.backbone_name == "dinov2":
            return m.classifier(torch.cat([self._cls(h, layout), self._patch_mean(h, layout, size)], dim=1))
        if hasattr(m, "cls_classifier"):
            return (m.cls_classifier(self._cls(h, layout)) + m.distillation_classifier(self._cls(h, layout, 1))) / 2
        return m.classifier(self._cls(h, layout))

    block_names = HF_VIT_NAMES

    def layer_prefix(self, layer: int) -> str:
        return f"{self.backbone_name}.{self.layers_path}.{layer}."

    # -- physical slimming ---------------------------------------------------------------------
    def slim(self, kept: Kept, token_merges: list[int] | None = None):
        base = type(self.model).__name__.removeprefix("OptinSlim")
        if base not in vit_slim_model.SLIM_CLASSES:
            raise TypeError(f"no slim class for {type(self.model).__name__}; known: {sorted(vit_slim_model.SLIM_CLASSES)}")
        slim_cls = vit_slim_model.SLIM_CLASSES[base]
        config = copy.deepcopy(self.config)
        config.optin_heads_per_layer, config.optin_neurons_per_layer = kept.counts("head"), kept.counts("neuron")
        config.optin_token_merges = list(token_merges) if token_merges else None
        config.architectures = [slim_cls.__name__]
        config.auto_map = {"AutoModelForImageClassification": f"{SLIM_MODEL_FILE[:-3]}.{slim_cls.__name__}"}
        with torch.device(self.device):  # the slim model next to the dense one
            slim = slim_cls(config).eval()
        source = self.model.state_dict()
        target = {name: source.get(name) for name in slim.state_dict()}
        for index, (heads, neurons) in enumerate(zip(kept["head"], kept["neuron"], strict=True)):
            slice_layer(source, target, self.layer_prefix(index), HF_VIT_NAMES, heads, neurons, self.head_dim)
        return load_sliced(slim, target)

    @staticmethod
    def save_slim(slim_model, path: str | Path, *, tokenizer=None, **spec) -> None:
        """Save so that AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True) rebuilds it."""
        no_spec(spec, "HF vit", tokenizer)
        path = Path(path)
        slim_model.save_pretrained(path)
        shutil.copyfile(vit_slim_model.__file__, path / SLIM_MODEL_FILE)

    @staticmethod
    def load_slim(path: str | Path):
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True).eval()


class TimmVitAdapter(VisionTransformerAdapter):
    """timm `VisionTransformer` (vit_*, deit_*): class-token or average pooling, optional LayerScale."""

    family = "timm_vit"

    def __init__(self, model):
        if getattr(model, "reg_token", None) is not None or getattr(model, "num_prefix_tokens", 1) != 1:
            raise TypeError("timm ViTs with register or distillation tokens are not supported")
        if model.global_pool not in ("token", "avg"):
            raise TypeError(f"timm global_pool {model.global_pool!r} is not supported (expected 'token' or 'avg')")
        self.blocks = model.blocks
        super().__init__(model)

    @classmethod
    def handles(cls, model) -> bool:
        return hasattr(model, "blocks") and hasattr(model, "patch_embed") and hasattr(model, "head")

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def hidden_size(self) -> int:
        return self.model.embed_dim

    @property
    def num_heads_dense(self) -> int:
        return self.model.optin_dense_heads if hasattr(self.model, "optin_dense_heads") else self.blocks[0].attn.num_heads

    @property
    def final_norm(self):
        return self.model.norm

    def _view(self, index):
        block = self.blocks[index]
        attn, mlp = block.attn, block.mlp
        has_heads = hasattr(attn, "qkv")
        if has_heads and not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)):
            raise TypeError("timm attention with q/k normalisation is not supported")
        has_mlp = hasattr(mlp, "fc1")
        return BlockView(
            norm1=block.norm1, norm2=block.norm2,
            qkv=(attn.qkv.weight.detach(), None if attn.qkv.bias is None else attn.qkv.bias.detach()) if has_heads else None,
            scaling=attn.scale if has_heads else 1.0,
            o_proj=attn.proj if has_heads else attn,
            fc1=mlp.fc1 if has_mlp else None, fc2=mlp.fc2 if has_mlp else mlp,
            act=mlp.act if has_mlp else nn.Identity(),
            gamma1=getattr(block.ls1, "gamma", None), gamma2=getattr(block.ls2, "gamma", None),
        )

    def pixel_embeddings(self, pixel_values):
        m = self.model
        return m.norm_pre(m._pos_embed(m.patch_embed(pixel_values)))

    def _pool(self, h, layout, size=None):
        m = self.model
        pooled = self._cls(h, layout) if m.global_pool == "token" else self._patch_mean(h, layout, size)
        return m.head(m.fc_norm(pooled))

    def slim(self, kept: Kept, token_merges: list[int] | None = None):
        if token_merges and any(token_merges):
            raise NotImplementedError("token merging is evaluated through forward_merged for timm models")
        slim = copy.deepcopy(self.model).eval()
        with torch.device(self.device):  # the resized blocks next to the dense ones
            resize_timm_blocks(slim, kept.counts("head"), kept.counts("neuron"), self.head_dim)
        for index, (heads, neurons) in enumerate(zip(kept["head"], kept["neuron"], strict=True)):
            src, dst = self.blocks[index], slim.blocks[index]
            with torch.no_grad():
                if heads:
                    cols = torch.tensor([h * self.head_dim + c for h in heads for c in range(self.head_dim)],
                                        device=self.device)
                    qkv_rows = torch.cat([cols + part * self.hidden_size for part in range(3)])
                    dst.attn.qkv.weight.copy_(src.attn.qkv.weight[qkv_rows])
                    if src.attn.qkv.bias is not None:
                        dst.attn.qkv.bias.copy_(src.attn.qkv.bias[qkv_rows])
                    dst.attn.proj.weight.copy_(src.attn.proj.weight[:, cols])
                    dst.attn.proj.bias.copy_(src.attn.proj.bias)
                else:
                    dst.attn.bias.copy_(src.attn.proj.bias)
                if neurons:
                    rows = torch.tensor(neurons, device=self.device)
                    dst.mlp.fc1.weight.copy_(src.mlp.fc1.weight[rows])
                    dst.mlp.fc1.bias.copy_(src.mlp.fc1.bias[rows])
                    dst.mlp.fc2.weight.copy_(src.mlp.fc2.weight[:, rows])
                    dst.mlp.fc2.bias.copy_(src.mlp.fc2.bias)
                else:
                    dst.mlp.bias.copy_(src.mlp.fc2.bias)
        return slim

    @staticmethod
    def save_slim(slim_model, path: str | Path, *, tokenizer=None, **spec) -> None:
        """safetensors weights + a spec that `load_slim` turns back into the timm model:
        `timm.create_model(timm_name, **timm_kwargs)` and the per-layer widths (``spec``: timm_name,
        timm_kwargs)."""
        from safetensors.torch import save_file

        if set(spec) != {"timm_name", "timm_kwargs"} or tokenizer is not None:
            raise TypeError(f"a timm ViT's slim model is saved with timm_name= and timm_kwargs= (how timm.create_model "
                            f"rebuilds it) and no tokenizer; got {sorted(spec)}")
        timm_name, timm_kwargs = spec["timm_name"], spec["timm_kwargs"]
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        adapter = TimmVitAdapter(slim_model)
        spec = {"timm_name": timm_name, "timm_kwargs": timm_kwargs, "dense_heads": adapter.num_heads_dense,
                "heads_per_layer": adapter.unit_counts("head"), "neurons_per_layer": adapter.unit_counts("neuron")}
        (path / TIMM_SLIM_SPEC).write_text(json.dumps(spec, indent=1) + "\n")
        save_file({k: v.contiguous() for k, v in slim_model.state_dict().items()}, path / "model.safetensors")

    @staticmethod
    def load_slim(path: str | Path):
        import timm
        from safetensors.torch import load_file

        path = Path(path)
        spec = json.loads((path / TIMM_SLIM_SPEC).read_text())
        model = timm.create_model(spec["timm_name"], pretrained=False, **spec["timm_kwargs"])
        head_dim = model.embed_dim // spec["dense_heads"]
        resize_timm_blocks(model, spec["heads_per_layer"], spec["neurons_per_layer"], head_dim)
        model.load_state_dict(load_file(path / "model.safetensors"), strict=True)
        return model.eval()


class _TimmConstantBranch(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x, *args, **kwargs):
        return self.bias.expand_as(x)


def resize_timm_blocks(model, heads_per_layer, neurons_per_layer, head_dim) -> None:
    model.optin_dense_heads = model.embed_dim // head_dim
    dim = model.embed_dim
    for block, n_heads, n_neurons in zip(model.blocks, heads_per_layer, neurons_per_layer, strict=True):
        if n_heads == 0:
            block.attn = _TimmConstantBranch(dim)
        else:
            attn = block.attn
            width = n_heads * head_dim
            attn.qkv = nn.Linear(dim, 3 * width, bias=attn.qkv.bias is not None)
            attn.proj = nn.Linear(width, dim)
            attn.num_heads, attn.attn_dim = n_heads, width
        if n_neurons == 0:
            block.mlp = _TimmConstantBranch(dim)
        else:
            block.mlp.fc1 = nn.Linear(dim, n_neurons)
            block.mlp.fc2 = nn.Linear(n_neurons, dim)


ADAPTER_CLASSES = (HfVitAdapter, TimmVitAdapter)
