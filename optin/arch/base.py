"""The protocol between the scoring engine and a model family.

A transformer layer is seen as two residual sub-blocks with a resume point after each:

    x --attention--> attn_resid --after_attention--> a --ffn--> ffn_out --after_ffn--> next x

``attention`` can also return every head's additive contribution to ``attn_resid``, and
``neuron_directions`` gives each FFN neuron's direction in ``ffn_out``; the engine removes one unit
by subtracting its contribution and resumes there, which is exact and skips the matmuls before it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from optin.engine.masks import Kept  # noqa: F401 - re-exported: optin.arch.Kept

@dataclass(frozen=True)
class TokenLayout:
    """Which positions of a padded [N, T] batch exist as rows of the hidden states.

    Hidden states are [R, D] rows in row-major (sequence, position) order. Per-token work (every
    Linear, LayerNorm, activation) runs on the rows only; attention scatters them to [N, T].
    ``index`` is None when every position is a row (the usual padded layout).
    """

    n: int
    t: int
    index: torch.Tensor | None      # [R] flat positions in N * T
    first_rows: torch.Tensor        # [N] row of each sequence's first token
    key_mask: torch.Tensor | None   # [N, 1, 1, T] additive mask of padding keys
    grid: tuple[int, int] | None = None  # patch grid of the layer-0 tokens (windowed attention)

    @classmethod
    def from_rows(cls, rows: torch.Tensor, key_mask: torch.Tensor | None) -> TokenLayout:
        n, t = rows.shape
        flat = rows.reshape(-1)
        index = None if bool(flat.all()) else torch.nonzero(flat).squeeze(1)
        row_of_position = torch.cumsum(flat.long(), 0) - 1
        return cls(n=n, t=t, index=index, first_rows=row_of_position[torch.arange(n, device=rows.device) * t],
                   key_mask=key_mask)

    @property
    def rows(self) -> int:
        return self.n * self.t if self.index is None else len(self.index)

    def repeat(self, times: int) -> TokenLayout:
        """Layout of ``times`` stacked copies of the batch (copy-major)."""
        offsets = torch.arange(times, device=self.first_rows.device)
        index = None if self.index is None else (self.index[None] + offsets[:, None] * self.n * self.t).reshape(-1)
        first = (self.first_rows[None] + offsets[:, None] * self.rows).reshape(-1)
        key_mask = None if self.key_mask is None else self.key_mask.repeat(times, 1, 1, 1)
        return TokenLayout(n=self.n * times, t=self.t, index=index, first_rows=first, key_mask=key_mask, grid=self.grid)

    def to_padded(self, x: torch.Tensor) -> torch.Tensor:
        """[R, C] -> [N, T, C], zeros at positions that are not rows."""
        if self.index is None:
            return x.reshape(self.n, self.t, -1)
        out = x.new_zeros(self.n * self.t, x.shape[-1])
        out[self.index] = x
        return out.view(self.n, self.t, -1)

    def from_padded(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(self.n * self.t, -1)
        return flat if self.index is None else flat[self.index]


class EncoderAdapter(ABC):
    family: str
    model: Any
    # Where a last-layer unit's own drift shows: its layer's tap (BERT: the FFN output), or, when the
    # taps sit at layer inputs (ViT), an extra tap L after the last layer (``output_tap``).
    final_tap_is_output: bool = False
    # Taps L, L+1, ... computed by ``head`` after the encoder (a segmentation decoder's features):
    # every unit of every layer changes them, so they join every unit's trajectory.
    decoder_taps: int = 0
    # Layer taps that ``head`` reads besides the last hidden state (a backbone's stage outputs).
    readout_layers: tuple[int, ...] = ()
    # MLP channels per "neuron" unit: 1, or a decoder's channel groups (optin.arch.llama)
    neuron_group: int = 1

    @property
    def device(self) -> torch.device:
        """Where the model's weights are: masks and index tensors built for it go there."""
        return next(self.model.parameters()).device

    @property
    def final_tap(self) -> int:
        return self.num_layers if self.final_tap_is_output else self.num_layers - 1

    def output_tap(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no output tap")

    def head(
        self, h: torch.Tensor, layout: TokenLayout, layer_taps: dict[int, torch.Tensor]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(taps L, L+1, ..., logits) from the last hidden state and the ``readout_layers`` taps."""
        return ([self.output_tap(h)] if self.final_tap_is_output else []), self.logits(h, layout)

    @classmethod
    @abstractmethod
    def handles(cls, model) -> bool: ...

    # -- structure --------------------------------------------------------------------------
    @property
    @abstractmethod
    def num_layers(self) -> int: ...

    @abstractmethod
    def unit_counts(self, kind: str) -> list[int]:
        """Number of units of ``kind`` in each layer of the (possibly slimmed) model."""

    @property
    @abstractmethod
    def hidden_size(self) -> int: ...

    @property
    @abstractmethod
    def head_dim(self) -> int: ...

    @abstractmethod
    def layer_linear_shapes(self) -> list[dict]:
        """Per layer: the (out, in) shapes of the prunable Linear layers present and the total
        attention width (kept heads x head dim), read from the modules themselves."""

    # -- functional forward pieces -----------------------------------------------------------
    @abstractmethod
    def embed(self, batch: dict[str, torch.Tensor], rows: torch.Tensor | None = None) -> tuple[torch.Tensor, TokenLayout]:
        """Layer-0 input as [R, D] rows and its layout; ``rows`` ([N, T] bool) picks the positions
        that exist (default: all of them)."""

    @abstractmethod
    def attention(
        self, layer: int, x: torch.Tensor, layout: TokenLayout, head_mask: torch.Tensor | None = None,
        per_head: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Residual sum after attention; with ``per_head`` also [H, R, D] head contributions."""

    @abstractmethod
    def after_attention(self, layer: int, attn_resid: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def ffn(
        self, layer: int, a: torch.Tensor, neuron_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """FFN output (before the residual) and the activations [R, D_ff]."""

    @abstractmethod
    def neuron_directions(self, layer: int) -> torch.Tensor:
        """[D_ff, D]: neuron j adds act_j * row j to the FFN output."""

    @abstractmethod
    def after_ffn(self, layer: int, a: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def layer_tap(self, layer: int, x: torch.Tensor, a: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor:
        """The feature tapped at ``layer`` (the trajectory point of optin-method.md §3)."""

    @abstractmethod
    def logits(self, h: torch.Tensor, layout: TokenLayout) -> torch.Tensor: ...

    @abstractmethod
    def slim(self, kept: Kept):
        """A new model with the pruned units physically removed."""

    # -- generic composition -----------------------------------------------------------------
    def layer(
        self, layer: int, x: torch.Tensor, layout: TokenLayout,
        head_mask: torch.Tensor | None = None, neuron_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attn_resid, _ = self.attention(layer, x, layout, head_mask)
        a = self.after_attention(layer, attn_resid)
        ffn_out, _ = self.ffn(layer, a, neuron_mask)
        out = self.after_ffn(layer, a, ffn_out)
        return out, (out if self.tap_position == "layer_output" else self.layer_tap(layer, x, a, ffn_out))

    def masked_forward(
        self, batch: dict[str, torch.Tensor],
        head_masks: list[torch.Tensor | None] | None = None,
        neuron_masks: list[torch.Tensor | None] | None = None,
        rows: torch.Tensor | None = None,
        drop_token: tuple[int, int] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Masked forward: (layer inputs 0..L, taps 0..L-1 (+ the taps ``head`` adds), logits);
        features are [R, D] rows. Masks are per layer, [H] / [D_ff]. ``drop_token`` = (l, p) removes token p
        of every sequence from the input of layer l (OPTIN-tau's token unit)."""
        x, layout = self.embed(batch, rows)
        inputs, taps = [x], []
        for layer in range(self.num_layers):
            if drop_token is not None and drop_token[0] == layer:
                keep = torch.ones(layout.n, layout.t, dtype=torch.bool, device=x.device)
                keep[:, drop_token[1]] = False
                x = layout.to_padded(x)[keep]
                layout = TokenLayout.from_rows(keep, layout.key_mask)
            hm = head_masks[layer] if head_masks is not None else None
            nm = neuron_masks[layer] if neuron_masks is not None else None
            x, tap = self.layer(layer, x, layout, hm, nm)
            inputs.append(x)
            taps.append(tap)
        head_taps, logits = self.head(x, layout, {k: taps[k] for k in self.readout_layers})
        return inputs, taps + head_taps, logits

    # Scoring and evaluation need no graph; Kwon's Fisher (optin.methods.kwon) calls masked_forward with grad.
    forward = torch.no_grad()(masked_forward)

    def weights_changed(self) -> None:
        """Drop anything cached from the weights (after they are edited or cast)."""

    # The trajectory point of a layer: the family's ``layer_tap`` (the authors' choice, §3), or, as an
    # ablation (OptinMethod.tap), the layer's output hidden state.
    tap_position: str = "default"

    def tap_at(self, layer: int, x: torch.Tensor, a: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor:
        if self.tap_position == "layer_output":
            return self.after_ffn(layer, a, ffn_out)
        return self.layer_tap(layer, x, a, ffn_out)

    # State-dict names of a layer's prunable projections, for weight-based baselines (optin.methods.baselines).
    block_names: BlockNames | None = None

    def layer_prefix(self, layer: int) -> str:
        raise NotImplementedError(f"{type(self).__name__} does not name its layers' weights")

    def unit_weight_norms(self, kind: str) -> list[torch.Tensor]:
        """Per layer, each unit's L1 weight norm: a head's rows of Q, K, V (biases included) and its
        columns of the output projection; a neuron's row of the up projection (+ bias) and its column
        of the down projection."""
        if self.block_names is None:
            raise NotImplementedError(f"{type(self).__name__} has no weight names for magnitude scores")
        names, state, dh = self.block_names, self.model.state_dict(), self.head_dim
        norms = []
        for layer, count in enumerate(self.unit_counts(kind)):
            prefix = self.layer_prefix(layer)
            if count == 0:
                norms.append(torch.zeros(0, device=self.device))
                continue
            if kind == "head":
                total = torch.zeros(count, device=self.device)
                for proj in names.qkv:
                    rows = state[f"{prefix}{proj}.weight"].abs().sum(1)
                    bias = state.get(f"{prefix}{proj}.bias")
                    if bias is not None:
                        rows = rows + bias.abs()
                    total += rows.view(count, dh).sum(1)
                total += state[f"{prefix}{names.out}.weight"].abs().sum(0).view(count, dh).sum(1)
            elif kind == "neuron":
                total = (state[f"{prefix}{names.up}.weight"].abs().sum(1) + state[f"{prefix}{names.up}.bias"].abs()
                         + state[f"{prefix}{names.down}.weight"].abs().sum(0))
            else:
                raise ValueError(f"unit kind must be 'head' or 'neuron', got {kind!r}")
            norms.append(total.double())
        return norms

    def kept_masks(self, kept: Kept) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """0/1 mask tensors per layer for a Kept selection on the unpruned model."""
        head_masks, neuron_masks = [], []
        for layer, (n_heads, n_neurons) in enumerate(
            zip(self.unit_counts("head"), self.unit_counts("neuron"), strict=True)
        ):
            hm = torch.zeros(n_heads, device=self.device)
            hm[list(kept["head"][layer])] = 1.0
            nm = torch.zeros(n_neurons, device=self.device)
            nm[list(kept["neuron"][layer])] = 1.0
            head_masks.append(hm)
            neuron_masks.append(nm)
        return head_masks, neuron_masks

    def masked_logits(self, batch: dict[str, torch.Tensor], kept: Kept) -> torch.Tensor:
        """The unpruned model's logits with only ``kept``'s units: what its slim model must output."""
        return self.forward(batch, *self.kept_masks(kept))[2]


@dataclass(frozen=True)
class BlockNames:
    """State-dict names, relative to a layer, of what slimming slices."""

    qkv: tuple[str, str, str]         # projections whose output rows are heads
    out: str                          # projection whose input columns are heads
    up: str                           # FFN projection whose output rows are neurons
    down: str                         # FFN projection whose input columns are neurons
    attention_bypass: dict[str, str]  # slim name <- dense name when a layer keeps no head
    ffn_bypass: dict[str, str]        # ... when it keeps no neuron


def slice_layer(source: dict, target: dict, prefix: str, names: BlockNames, heads, neurons, head_dim: int) -> None:
    """Fill ``target`` (the slim state dict) with the kept heads' and neurons' weights of one layer."""
    device = source[f"{prefix}{names.out}.weight"].device
    if heads:
        cols = torch.tensor([h * head_dim + c for h in heads for c in range(head_dim)], device=device)
        for proj in names.qkv:
            target[f"{prefix}{proj}.weight"] = source[f"{prefix}{proj}.weight"][cols]
            if f"{prefix}{proj}.bias" in target:
                target[f"{prefix}{proj}.bias"] = source[f"{prefix}{proj}.bias"][cols]
        target[f"{prefix}{names.out}.weight"] = source[f"{prefix}{names.out}.weight"][:, cols]
    else:
        for slim_name, dense_name in names.attention_bypass.items():
            target[prefix + slim_name] = source[prefix + dense_name]
    if neurons:
        rows = torch.tensor(neurons, device=device)
        target[f"{prefix}{names.up}.weight"] = source[f"{prefix}{names.up}.weight"][rows]
        target[f"{prefix}{names.up}.bias"] = source[f"{prefix}{names.up}.bias"][rows]
        target[f"{prefix}{names.down}.weight"] = source[f"{prefix}{names.down}.weight"][:, rows]
    else:
        for slim_name, dense_name in names.ffn_bypass.items():
            target[prefix + slim_name] = source[prefix + dense_name]


def no_spec(spec: dict, family: str, tokenizer=None) -> None:
    """The common ``save_slim(slim_model, path, *, tokenizer=None, **spec)`` signature: families whose
    slim model rebuilds from its own files take no spec (and those without text, no tokenizer)."""
    if spec:
        raise TypeError(f"a {family} slim model takes no save spec, got {sorted(spec)}")
    if tokenizer is not None:
        raise TypeError(f"a {family} slim model is saved without a tokenizer")


def load_sliced(slim, target: dict):
    """Load a fully sliced state dict (every slim parameter must have a source)."""
    missing = [k for k, v in target.items() if v is None]
    if missing:
        raise RuntimeError(f"slimming left parameters without a source: {missing[:5]}")
    slim.load_state_dict({k: v.clone() for k, v in target.items()}, strict=True)
    return slim


@torch.no_grad()
def apply_unit_scales(adapter, kept: Kept, head_scales, neuron_scales) -> None:
    """Fold per-unit scales into the weights in place: head h's columns of the output projection,
    neuron j's column of the down projection (what multiplying their mask values by the scale does)."""
    names, dh = adapter.block_names, adapter.head_dim
    for layer in range(adapter.num_layers):
        prefix = adapter.layer_prefix(layer)
        out = adapter.model.get_parameter(f"{prefix}{names.out}.weight") if kept["head"][layer] else None
        for head, scale in zip(kept["head"][layer], head_scales[layer], strict=True):
            out[:, head * dh : (head + 1) * dh] *= scale
        down = adapter.model.get_parameter(f"{prefix}{names.down}.weight") if kept["neuron"][layer] else None
        for neuron, scale in zip(kept["neuron"][layer], neuron_scales[layer], strict=True):
            down[:, neuron] *= scale
    adapter.weights_changed()


def pruned_encoder(dense, masks: dict, family: str):
    """(adapter, kept) of a transformer classifier's mask file. Kwon et
    al.'s tuned mask values are folded into a copy's weights, so the slim model carries them and
    latency still compares against the untouched dense model."""
    from optin.arch import adapter_for

    kept = Kept.from_json(masks["kept"])
    adapter = adapter_for(dense, family)
    if "unit_scales" in masks:
        import copy

        adapter = adapter_for(copy.deepcopy(dense), family)
        apply_unit_scales(adapter, kept, masks["unit_scales"]["head"], masks["unit_scales"]["neuron"])
    return adapter, kept


def encoder_macs_of(model, family: str, masks: dict) -> float:
    """A (slim) encoder's MACs counted from its weight shapes, at the mask file's tokens per layer."""
    from optin.engine import flops
    from optin.arch import adapter_for

    tokens = masks.get("tokens_per_layer") or masks["mac_seq_len"]
    return flops.count_linear_attention_macs(adapter_for(model, family).layer_linear_shapes(), tokens)


def kept_unit_counts(kept: Kept) -> dict:
    heads, neurons = kept.counts("head"), kept.counts("neuron")
    return {"heads_kept": sum(heads), "neurons_kept": sum(neurons), "layers_without_heads": sum(h == 0 for h in heads),
            "layers_without_neurons": sum(n == 0 for n in neurons)}
