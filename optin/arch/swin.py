"""Adapter for Mask2Former with a Swin backbone (transformers `Mask2FormerForUniversalSegmentation`).

Layers are the Swin blocks numbered across stages (Swin-T: 2 + 2 + 6 + 2 = 12); units are every
block's attention heads and MLP neurons. A block is

    x -> [patch merging, first block of stages 2..4] -> x + WindowAttn(LN1(x)) -> a -> a + MLP(LN2(a))

Window attention runs on M x M windows of the map padded to a multiple of M, every odd block of a
stage on windows shifted by M/2 (the backbone always partitions, so the shift stays on even when a
map is smaller than a window). Head h's share of the attention output is its column block of the
output projection applied to its context, carried back through window reverse, unshift and crop,
all linear, so removing a head is exact subtraction. Patch merging runs at the start of the next
stage's first block, so a block's tap and the engine's resume points stay at one resolution.

Taps: block k's output. The four stage outputs, through the backbone's LayerNorms, feed the pixel
decoder; the decoder's 1/4-scale mask features and the transformer decoder's final query states are
two more taps (L, L+1) in every unit's trajectory. The output term compares per-pixel class
distributions: Mask2Former's semantic score sum_q softmax(class_q)[c] * sigmoid(mask_q) at mask
resolution, normalised over classes (its logarithm is the "logits" the KL term softens).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from torch.nn import functional as F

from optin.engine import flops
from optin.arch import mask2former_slim_model
from optin.arch.base import BlockNames, EncoderAdapter, Kept, TokenLayout, load_sliced, no_spec, slice_layer

SLIM_MODEL_FILE = "modeling_optin_mask2former.py"
SWIN_NAMES = BlockNames(
    qkv=("attention.q_proj", "attention.k_proj", "attention.v_proj"), out="attention.o_proj",
    up="mlp.fc1", down="mlp.fc2",
    attention_bypass={"attention.bias": "attention.o_proj.bias"}, ffn_bypass={"mlp.bias": "mlp.fc2.bias"},
)
BACKBONE_PATH = "model.pixel_level_module.encoder"


def stage_grids(grid: tuple[int, int], stages: int) -> list[tuple[int, int]]:
    """Token grid of each stage: patch merging halves it, rounding up (odd maps are padded)."""
    grids = [grid]
    for _ in range(stages - 1):
        h, w = grids[-1]
        grids.append(((h + 1) // 2, (w + 1) // 2))
    return grids


def _padded(size: int, window: int) -> int:
    return size + (window - size % window) % window


class Mask2FormerSwinAdapter(EncoderAdapter):
    family = "mask2former_swin"
    decoder_taps = 2

    def __init__(self, model):
        self.model = model.eval()
        self.backbone = model.model.pixel_level_module.encoder
        stages = self.backbone.swin.encoder.layers
        self.stage_modules = list(stages)
        self.blocks = [(s, i, block) for s, stage in enumerate(stages) for i, block in enumerate(stage.blocks)]
        if list(self.backbone.out_features) != list(self.backbone.stage_names[1:]):
            raise TypeError(f"the Swin backbone must output every stage to the pixel decoder, got {self.backbone.out_features}")
        self.readout_layers = tuple(
            max(k for k, (s, _, _) in enumerate(self.blocks) if s == stage) for stage in range(len(stages))
        )
        self.window = self.backbone.config.window_size
        cfg = self.backbone.config
        dims = {cfg.embed_dim * 2**s // cfg.num_heads[s] for s in range(len(cfg.depths))}
        if len(dims) != 1:
            raise TypeError(f"Swin stages with different head dims {sorted(dims)} are not supported")
        self._head_dim = dims.pop()

    @classmethod
    def handles(cls, model) -> bool:
        from transformers import Mask2FormerForUniversalSegmentation, SwinBackbone

        return isinstance(model, Mask2FormerForUniversalSegmentation) and isinstance(
            model.model.pixel_level_module.encoder, SwinBackbone
        )

    # -- structure -----------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def hidden_size(self) -> int:
        """Width of the first stage (each later stage doubles it; see ``layer_widths``)."""
        return self.layer_widths()[0]

    def layer_widths(self) -> list[int]:
        return [block.layernorm_before.normalized_shape[0] for _, _, block in self.blocks]

    @property
    def head_dim(self) -> int:
        return self._head_dim

    def unit_counts(self, kind: str) -> list[int]:
        if kind == "head":
            return [b.attention.q_proj.out_features // self.head_dim if hasattr(b.attention, "q_proj") else 0
                    for _, _, b in self.blocks]
        if kind == "neuron":
            return [b.mlp.fc1.out_features if hasattr(b.mlp, "fc1") else 0 for _, _, b in self.blocks]
        raise ValueError(f"unit kind must be 'head' or 'neuron' for Swin, got {kind!r}")

    def layer_linear_shapes(self) -> list[dict]:
        shapes = []
        for _, _, b in self.blocks:
            att, mlp = b.attention, b.mlp
            attention = [(m.out_features, m.in_features) for m in (att.q_proj, att.k_proj, att.v_proj, att.o_proj)] \
                if hasattr(att, "q_proj") else []
            ffn = [(m.out_features, m.in_features) for m in (mlp.fc1, mlp.fc2)] if hasattr(mlp, "fc1") else []
            shapes.append({"attention_linears": attention, "ffn_linears": ffn,
                           "attention_width": att.q_proj.out_features if attention else 0})
        return shapes

    def block_geometry(self, grid: tuple[int, int]) -> list[dict]:
        """Per block for a layer-0 patch grid: tokens, tokens after window padding, window area."""
        grids = stage_grids(grid, len(self.stage_modules))
        out = []
        for s, _, _ in self.blocks:
            h, w = grids[s]
            out.append({"tokens": h * w, "padded_tokens": _padded(h, self.window) * _padded(w, self.window),
                        "window_area": self.window**2})
        return out

    def unit_macs(self, grid: tuple[int, int]) -> tuple[list[float], list[float]]:
        """MACs of one head and of one neuron in each block (optin-method.md §6, Swin form)."""
        heads, neurons = [], []
        for geometry, width in zip(self.block_geometry(grid), self.layer_widths(), strict=True):
            heads.append(flops.window_head_macs(geometry["padded_tokens"], width, self.head_dim, geometry["window_area"]))
            neurons.append(flops.neuron_macs(geometry["tokens"], width))
        return heads, neurons

    def patch_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        patch = self.backbone.config.patch_size
        return (-(-image_size[0] // patch), -(-image_size[1] // patch))

    # -- functional forward ----------------------------------------------------------------------
    def _grid(self, layout: TokenLayout, layer: int) -> tuple[int, int]:
        return stage_grids(layout.grid, len(self.stage_modules))[self.blocks[layer][0]]

    def embed(self, batch, rows=None):
        x, grid = self.backbone.swin.embeddings(batch["pixel_values"])
        n, t, _ = x.shape
        layout = TokenLayout(n=n, t=t, index=None, first_rows=torch.arange(n, device=x.device) * t, key_mask=None, grid=tuple(grid))
        return x.reshape(n * t, -1), layout

    def _merge_if_first(self, layer: int, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        stage, index, _ = self.blocks[layer]
        if stage == 0 or index != 0:
            return x
        h, w = stage_grids(layout.grid, len(self.stage_modules))[stage - 1]
        merged = self.stage_modules[stage - 1].downsample(x.view(layout.n, h * w, -1), (h, w))
        return merged.reshape(-1, merged.shape[-1])

    def _from_windows(self, windows: torch.Tensor, copies: int, layout: TokenLayout, layer: int) -> torch.Tensor:
        """[copies * n * nW, M*M, C] window rows -> [copies * n * H * W, C] rows of the map."""
        _, _, block = self.blocks[layer]
        m, shift = self.window, block.shift_size
        h, w = self._grid(layout, layer)
        hp, wp = _padded(h, m), _padded(w, m)
        c = windows.shape[-1]
        grid = windows.view(copies * layout.n, hp // m, wp // m, m, m, c).transpose(2, 3).reshape(-1, hp, wp, c)
        if shift:
            grid = torch.roll(grid, shifts=(shift, shift), dims=(1, 2))
        return grid[:, :h, :w].reshape(-1, c)

    def attention(self, layer, x, layout, head_mask=None, per_head=False):
        x = self._merge_if_first(layer, x, layout)
        _, _, block = self.blocks[layer]
        att = block.attention
        if not hasattr(att, "q_proj"):
            return x + att.bias, (x.new_zeros(0, *x.shape) if per_head else None)
        m, shift, dh = self.window, block.shift_size, self.head_dim
        h, w = self._grid(layout, layer)
        hp, wp = _padded(h, m), _padded(w, m)
        c = x.shape[-1]
        grid = F.pad(block.layernorm_before(x).view(layout.n, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
        if shift:
            grid = torch.roll(grid, shifts=(-shift, -shift), dims=(1, 2))
        windows = grid.view(layout.n, hp // m, m, wp // m, m, c).transpose(2, 3).reshape(-1, m * m, c)
        b = windows.shape[0]
        q, k, v = (F.linear(windows, p.weight, p.bias).view(b, m * m, -1, dh).transpose(1, 2)
                   for p in (att.q_proj, att.k_proj, att.v_proj))
        n_heads = q.shape[1]
        scores = (q @ k.transpose(-1, -2)) * att.scaling + att.relative_position_bias()
        shift_mask = block.get_attn_mask(hp, wp, dtype=scores.dtype, device=scores.device)
        if shift_mask is not None:
            n_windows = shift_mask.shape[0]
            scores = (scores.view(layout.n, n_windows, n_heads, m * m, m * m) + shift_mask[None, :, None]).view_as(scores)
        context = torch.softmax(scores, dim=-1) @ v                      # [B, heads, M*M, dh]
        if head_mask is not None:
            context = context * head_mask.view(1, -1, 1, 1)
        out = att.o_proj(context.transpose(1, 2).reshape(b, m * m, n_heads * dh))
        resid = x + self._from_windows(out, 1, layout, layer)
        if not per_head:
            return resid, None
        per = torch.einsum("bhtd,chd->hbtc", context, att.o_proj.weight.view(c, n_heads, dh))
        head_out = self._from_windows(per.reshape(n_heads * b, m * m, c), n_heads, layout, layer)
        return resid, head_out.view(n_heads, -1, c)

    def after_attention(self, layer, attn_resid):
        return attn_resid

    def ffn(self, layer, a, neuron_mask=None):
        mlp = self.blocks[layer][2].mlp
        if not hasattr(mlp, "fc1"):
            return mlp.bias.expand_as(a), a.new_zeros(a.shape[0], 0)
        act = mlp.activation_fn(mlp.fc1(self.blocks[layer][2].layernorm_after(a)))
        if neuron_mask is not None:
            act = act * neuron_mask
        return mlp.fc2(act), act

    def neuron_directions(self, layer):
        return self.blocks[layer][2].mlp.fc2.weight.t()

    def after_ffn(self, layer, a, ffn_out):
        return a + ffn_out

    def layer_tap(self, layer, x, a, ffn_out):
        return a + ffn_out

    def feature_maps(self, layer_taps: dict[int, torch.Tensor], layout: TokenLayout) -> list[torch.Tensor]:
        """The backbone's normalised stage outputs [N, C, H, W], as the pixel decoder reads them."""
        grids = stage_grids(layout.grid, len(self.stage_modules))
        maps = []
        for stage, (layer, name) in enumerate(zip(self.readout_layers, self.backbone.out_features, strict=True)):
            rows = self.backbone.hidden_states_norms[name](layer_taps[layer])
            h, w = grids[stage]
            maps.append(rows.view(layout.n, h, w, -1).permute(0, 3, 1, 2).contiguous())
        return maps

    def decode(self, maps: list[torch.Tensor]):
        """Pixel decoder + transformer decoder: (mask features, final query states, class logits, mask logits)."""
        pixel = self.model.model.pixel_level_module.decoder(maps)
        decoder = self.model.model.transformer_module(
            multi_scale_features=pixel.multi_scale_features, mask_features=pixel.mask_features, output_hidden_states=True,
        )
        queries = decoder.intermediate_hidden_states[-1].transpose(0, 1)  # [N, Q, D]
        return pixel.mask_features, queries, self.model.class_predictor(queries), decoder.masks_queries_logits[-1]

    def head(self, h, layout, layer_taps):
        mask_features, queries, class_logits, mask_logits = self.decode(self.feature_maps(layer_taps, layout))
        scores = semantic_scores(class_logits, mask_logits)              # [N, C, h, w]
        # Scores are positive; clamping keeps float32 underflow out of the log.
        logits = scores.clamp_min(1e-30).log().permute(0, 2, 3, 1).reshape(-1, scores.shape[1])
        pixel_rows = mask_features.permute(0, 2, 3, 1).reshape(-1, mask_features.shape[1])
        return [pixel_rows, queries.reshape(-1, queries.shape[-1])], logits

    def logits(self, h, layout):
        raise NotImplementedError("Mask2Former logits need the stage outputs: use head()")

    block_names = SWIN_NAMES

    def layer_prefix(self, layer: int) -> str:
        stage, index, _ = self.blocks[layer]
        return f"{BACKBONE_PATH}.swin.encoder.layers.{stage}.blocks.{index}."

    # -- physical slimming ---------------------------------------------------------------------
    def slim(self, kept: Kept):
        slim_cls = mask2former_slim_model.OptinSlimMask2FormerForUniversalSegmentation
        config = copy.deepcopy(self.model.config)
        config.optin_heads_per_layer, config.optin_neurons_per_layer = kept.counts("head"), kept.counts("neuron")
        config.architectures = [slim_cls.__name__]
        config.auto_map = {"AutoModelForUniversalSegmentation": f"{SLIM_MODEL_FILE[:-3]}.{slim_cls.__name__}"}
        with torch.device(self.device):  # the slim model next to the dense one
            slim = slim_cls(config).eval()
        source = self.model.state_dict()
        target = {name: source.get(name) for name in slim.state_dict()}
        for layer, (heads, neurons) in enumerate(zip(kept["head"], kept["neuron"], strict=True)):
            prefix = self.layer_prefix(layer)
            slice_layer(source, target, prefix, SWIN_NAMES, heads, neurons, self.head_dim)
            if heads:
                table = f"{prefix}attention.relative_position_bias.relative_position_bias_table"
                target[table] = source[table][:, list(heads)]
        return load_sliced(slim, target)

    @staticmethod
    def save_slim(slim_model, path: str | Path, *, tokenizer=None, **spec) -> None:
        """Save so that AutoModelForUniversalSegmentation.from_pretrained(path, trust_remote_code=True) rebuilds it."""
        no_spec(spec, "mask2former_swin", tokenizer)
        path = Path(path)
        slim_model.save_pretrained(path)
        shutil.copyfile(mask2former_slim_model.__file__, path / SLIM_MODEL_FILE)

    @staticmethod
    def load_slim(path: str | Path):
        from transformers import AutoModelForUniversalSegmentation

        return AutoModelForUniversalSegmentation.from_pretrained(path, trust_remote_code=True).eval()


def semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former's semantic segmentation scores [N, C, h, w] (the null class dropped)."""
    return torch.einsum("bqc,bqhw->bchw", class_logits.softmax(dim=-1)[..., :-1], mask_logits.sigmoid())


ADAPTER_CLASSES = (Mask2FormerSwinAdapter,)
