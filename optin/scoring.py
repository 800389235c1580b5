"""Exact OPTIN importance: the drift of downstream taps and logits when one unit is masked.

Two paths compute the same numbers:
- ``score_naive``: one full masked forward per unit (the oracle kept for tests);
- ``score_layer``: the engine. From the cached input of layer l it runs layer l once, then, for a
  chunk of V units, removes each unit's additive contribution (a head's share of the attention
  output, a neuron's rank-one share of the FFN output), stacks the V variants along the batch and
  runs only what follows: the rest of layer l and layers l+1..L-1, one pass per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from optin.arch.base import EncoderAdapter
from optin.losses import kl_divergence, manifold_distance, manifold_distance_direct, teacher_gram_dd, token_rows
from optin.methods import OptinMethod


@dataclass
class Teacher:
    """The unpruned model on one calibration batch."""

    batch: dict[str, torch.Tensor]
    layer_inputs: list[torch.Tensor]
    taps: list[torch.Tensor]
    logits: torch.Tensor

    def to_dict(self) -> dict:
        return {"batch": self.batch, "layer_inputs": self.layer_inputs, "taps": self.taps, "logits": self.logits}

    @classmethod
    def from_dict(cls, data: dict) -> Teacher:
        return cls(**data)


@torch.no_grad()
def run_teacher(adapter: EncoderAdapter, batch: dict[str, torch.Tensor]) -> Teacher:
    inputs, taps, logits = adapter.forward(batch)
    return Teacher(batch=batch, layer_inputs=inputs, taps=taps, logits=logits)


class RowSampler:
    """Chooses the K token rows compared by manifold distillation.

    With at most K rows all are used (the Gram difference is then permutation invariant, so the
    loss is deterministic). Otherwise one seeded subset per tap, or a fresh one per unit and tap
    (the authors' code).
    """

    def __init__(self, n_rows: int, k: int, fresh: bool, seed: int, stream: int):
        self.n_rows, self.k, self.fresh = n_rows, k, fresh
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + stream)
        self.fixed: dict[int, torch.Tensor] = {}

    @property
    def uses_all(self) -> bool:
        return self.n_rows <= self.k

    def for_tap(self, tap: int) -> torch.Tensor:
        if tap not in self.fixed:
            self.fixed[tap] = torch.randperm(self.n_rows, generator=self.generator)[: self.k]
        return self.fixed[tap]

    def fresh_rows(self) -> torch.Tensor:
        return torch.randperm(self.n_rows, generator=self.generator)[: self.k]


def _kl(method: OptinMethod, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    return kl_divergence(
        teacher_logits, student_logits,
        temperature=method.temperature, divide_logits=method.kl_divide_logits,
        reduction=method.kl_reduction, dtype=torch.float64 if method.kl_float64 else torch.float32,
        clamp=method.kl_clamp,
    )


def _base_head_masks(adapter: EncoderAdapter, layer: int, kind: str, method: OptinMethod):
    """§4.6: the authors' head loop leaves the last head of every earlier layer masked."""
    if not (method.cumulative_head_mask and kind == "head"):
        return None
    masks = []
    for index, n_heads in enumerate(adapter.unit_counts("head")):
        mask = torch.ones(n_heads)
        if index < layer and n_heads:
            mask[-1] = 0.0
        masks.append(mask)
    return masks


def _rng_stream(layer: int, kind: str) -> int:
    return layer * 2 + (0 if kind == "head" else 1)


def _layer_input(adapter, teacher, layer, base_masks):
    if base_masks is None:
        return teacher.layer_inputs[layer]
    x, ctx = adapter.embed(teacher.batch)
    for k in range(layer):
        x, _ = adapter.layer(k, x, ctx, head_mask=base_masks[k])
    return x


@torch.no_grad()
def score_layer(
    adapter: EncoderAdapter,
    teacher: Teacher,
    layer: int,
    kind: str,
    method: OptinMethod,
    seed: int,
    chunk: int = 32,
    progress: bool = False,
    units: list[int] | None = None,
) -> pd.DataFrame:
    """Raw (md, kl) of every unit of ``kind`` in ``layer`` (or of ``units``) with the prefix-cache engine."""
    num_layers = adapter.num_layers
    selected = torch.arange(adapter.unit_counts(kind)[layer]) if units is None else torch.as_tensor(units)
    trajectory = set(method.trajectory(layer, num_layers))
    _, ctx = adapter.embed(teacher.batch)
    base_masks = _base_head_masks(adapter, layer, kind, method)
    x = _layer_input(adapter, teacher, layer, base_masks)
    b, t, d = x.shape
    sampler = RowSampler(b * t, method.md_rows, method.md_fresh_subsets, seed, _rng_stream(layer, kind))
    teacher_rows = {k: token_rows(teacher.taps[k]) for k in sorted(trajectory)}
    if not sampler.uses_all and not sampler.fresh:
        teacher_rows = {k: rows[sampler.for_tap(k)] for k, rows in teacher_rows.items()}
    teacher_dd = {k: teacher_gram_dd(rows) for k, rows in teacher_rows.items()} if not sampler.fresh or sampler.uses_all else {}

    attn_resid, head_out = adapter.attention(layer, x, ctx, per_head=(kind == "head"))
    a = adapter.after_attention(layer, attn_resid)
    ffn_out, act = adapter.ffn(layer, a)
    directions = adapter.neuron_directions(layer) if kind == "neuron" else None

    rows = []
    for chunk_units in tqdm(torch.split(selected, chunk), desc=f"layer {layer} {kind}s", disable=not progress, mininterval=5):
        v = len(chunk_units)
        ctx_v = adapter.repeat_context(ctx, v)
        if kind == "head":
            resid_v = (attn_resid.unsqueeze(0) - head_out[chunk_units]).reshape(v * b, t, d)
            a_v = adapter.after_attention(layer, resid_v)
            ffn_out_v, _ = adapter.ffn(layer, a_v)
        else:
            removed = torch.einsum("btv,vd->vbtd", act[..., chunk_units], directions[chunk_units])
            ffn_out_v = (ffn_out.unsqueeze(0) - removed).reshape(v * b, t, d)
            a_v = a.repeat(v, 1, 1)
        md = torch.zeros(v, dtype=torch.float64)
        fresh = [sampler.fresh_rows() for _ in range(v)] if sampler.fresh and not sampler.uses_all else None

        def add_md(k, tap):
            nonlocal md
            student = token_rows(tap.reshape(v, b, t, -1))
            if fresh is None:
                if not sampler.uses_all:
                    student = student[:, sampler.for_tap(k)]
                md = md + manifold_distance(teacher_rows[k], student, teacher_dd[k])
            else:
                idx = torch.stack(fresh)
                md = md + manifold_distance(teacher_rows[k][idx], torch.gather(
                    student, 1, idx.unsqueeze(-1).expand(-1, -1, student.shape[-1])))

        if layer in trajectory:
            add_md(layer, adapter.layer_tap(layer, x.repeat(v, 1, 1), a_v, ffn_out_v))
        h = adapter.after_ffn(layer, a_v, ffn_out_v)
        for k in range(layer + 1, num_layers):
            h, tap = adapter.layer(k, h, ctx_v)
            if k in trajectory:
                add_md(k, tap)
        logits = adapter.logits(h, ctx_v).reshape(v, b, -1)
        kl = _kl(method, teacher.logits, logits)
        for i, unit in enumerate(chunk_units.tolist()):
            rows.append({"layer": layer, "kind": kind, "index": unit, "md": float(md[i]), "kl": float(kl[i])})
    return pd.DataFrame(rows, columns=["layer", "kind", "index", "md", "kl"])


@torch.no_grad()
def score_naive(
    adapter: EncoderAdapter,
    teacher: Teacher,
    layer: int,
    kind: str,
    method: OptinMethod,
    seed: int,
    units: list[int] | None = None,
) -> pd.DataFrame:
    """Oracle: one full masked forward per unit, Gram matrices built directly in float64."""
    num_layers = adapter.num_layers
    trajectory = method.trajectory(layer, num_layers)
    b, t, _ = teacher.layer_inputs[0].shape
    sampler = RowSampler(b * t, method.md_rows, method.md_fresh_subsets, seed, _rng_stream(layer, kind))
    base = _base_head_masks(adapter, layer, kind, method)
    rows = []
    for unit in range(adapter.unit_counts(kind)[layer]) if units is None else units:
        head_masks = [m.clone() for m in base] if base else [torch.ones(n) for n in adapter.unit_counts("head")]
        neuron_masks = [torch.ones(n) for n in adapter.unit_counts("neuron")]
        (head_masks if kind == "head" else neuron_masks)[layer][unit] = 0.0
        _, taps, logits = adapter.forward(teacher.batch, head_masks, neuron_masks)
        fresh = sampler.fresh_rows() if sampler.fresh and not sampler.uses_all else None
        md = 0.0
        for k in trajectory:
            ft, fs = token_rows(teacher.taps[k]), token_rows(taps[k])
            if not sampler.uses_all:
                idx = fresh if fresh is not None else sampler.for_tap(k)
                ft, fs = ft[idx], fs[idx]
            md += float(manifold_distance_direct(ft, fs))
        kl = float(_kl(method, teacher.logits, logits.unsqueeze(0))[0])
        rows.append({"layer": layer, "kind": kind, "index": unit, "md": md, "kl": kl})
    return pd.DataFrame(rows, columns=["layer", "kind", "index", "md", "kl"])
