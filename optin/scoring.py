"""Exact OPTIN importance: the drift of downstream taps and logits when one unit is masked.

Two paths compute the same numbers:
- ``score_naive``: one full masked forward of the padded calibration batch per unit (the oracle);
- ``score_layer``: the engine. From the cached input of layer l it runs layer l once, then, for a
  chunk of V units, removes each unit's additive contribution (a head's share of the attention
  output, a neuron's rank-one share of the FFN output), stacks the V variants along the batch and
  runs only what follows: the rest of layer l and layers l+1..L-1, one pass per chunk.

When padding positions are not MD rows, the teacher holds the calibration batch as length buckets,
each padded only to its own longest sentence: real tokens never attend to padding, so their
features are the same, and the engine skips most of the padding's matmuls. Rows are always
compared in one canonical order (sentence, then position), whatever the bucketing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from optin.arch.base import EncoderAdapter
from optin.losses import kl_divergence, manifold_distance, manifold_distance_direct, teacher_gram_dd
from optin.methods import OptinMethod


@dataclass
class Teacher:
    """The unpruned model on one calibration batch, split into sub-batches ("groups")."""

    batch: dict[str, torch.Tensor]          # the whole padded batch (naive path)
    groups: list[dict[str, torch.Tensor]]   # sub-batches the engine runs
    row_masks: list[torch.Tensor]           # per group [b, t] bool: positions that are MD rows
    row_order: torch.Tensor                 # concatenated group rows -> canonical order
    sentence_order: torch.Tensor            # concatenated group sentences -> batch order
    layer_inputs: list[list[torch.Tensor]]  # [group][layer 0..L]
    tap_rows: list[torch.Tensor]            # per layer: [rows, D] in canonical order
    logits: torch.Tensor                    # [B, C] in batch order
    include_padding: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> Teacher:
        return cls(**data)


def md_row_mask(batch: dict[str, torch.Tensor], include_padding: bool) -> torch.Tensor:
    mask = batch["attention_mask"].bool()
    return torch.ones_like(mask) if include_padding else mask


def length_groups(attention_mask: torch.Tensor, max_groups: int) -> list[torch.Tensor]:
    """Sentence indices in up to ``max_groups`` buckets of similar length (deterministic)."""
    lengths = attention_mask.sum(dim=1)
    order = torch.tensor(sorted(range(len(lengths)), key=lambda i: (int(lengths[i]), i)))
    return [chunk for chunk in torch.tensor_split(order, min(max_groups, len(order))) if len(chunk)]


def _sub_batch(batch: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    length = int(batch["attention_mask"][index].sum(dim=1).max())
    return {k: v[index, :length] for k, v in batch.items()}


@torch.no_grad()
def run_teacher(
    adapter: EncoderAdapter, batch: dict[str, torch.Tensor], include_padding: bool = True,
    max_groups: int | None = None,
) -> Teacher:
    """Unpruned features on ``batch``. Without padding rows the batch is split into ``max_groups``
    length buckets (default: one per sentence, which measured fastest on MiniLM on a CPU)."""
    if include_padding:
        index_groups = [torch.arange(batch["input_ids"].shape[0])]
        groups = [batch]
    else:
        index_groups = length_groups(batch["attention_mask"], max_groups or batch["input_ids"].shape[0])
        groups = [_sub_batch(batch, index) for index in index_groups]
    full_rows = md_row_mask(batch, include_padding)
    # Canonical id of each MD row: its rank among the full batch's rows (sentence-major).
    canonical = torch.full(full_rows.shape, -1, dtype=torch.long)
    canonical[full_rows] = torch.arange(int(full_rows.sum()))
    row_masks, group_ids, inputs, taps, logits = [], [], [], [], []
    for index, group in zip(index_groups, groups, strict=True):
        rows = md_row_mask(group, include_padding)
        row_masks.append(rows)
        group_ids.append(canonical[index, : rows.shape[1]][rows])
        g_inputs, g_taps, g_logits = adapter.forward(group)
        inputs.append(g_inputs)
        taps.append(g_taps)
        logits.append(g_logits)
    row_order = torch.argsort(torch.cat(group_ids))
    sentence_order = torch.cat(index_groups)
    tap_rows = [
        torch.cat([taps[g][k][row_masks[g]] for g in range(len(groups))])[row_order]
        for k in range(adapter.num_layers)
    ]
    return Teacher(
        batch=batch, groups=groups, row_masks=row_masks, row_order=row_order, sentence_order=sentence_order,
        layer_inputs=inputs, tap_rows=tap_rows, logits=torch.cat(logits)[torch.argsort(sentence_order)],
        include_padding=include_padding,
    )


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


def _check_teacher(teacher: Teacher, method: OptinMethod) -> None:
    if teacher.include_padding != method.md_include_padding:
        raise ValueError(
            f"teacher built with include_padding={teacher.include_padding}, method wants md_include_padding="
            f"{method.md_include_padding}"
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


def _normalised(rows: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(rows, dim=-1)


class _MdAccumulator:
    """Sums MD over the trajectory taps for a chunk of V variants."""

    def __init__(self, teacher: Teacher, method: OptinMethod, taps: set[int], sampler: RowSampler):
        self.teacher, self.sampler = teacher, sampler
        self.rows = {k: _normalised(teacher.tap_rows[k]) for k in sorted(taps)}
        if not sampler.uses_all and not sampler.fresh:
            self.rows = {k: rows[sampler.for_tap(k)] for k, rows in self.rows.items()}
        shared = sampler.uses_all or not sampler.fresh
        self.gram = {k: teacher_gram_dd(rows) for k, rows in self.rows.items()} if shared else {}

    def start_chunk(self, v: int) -> None:
        self.v = v
        self.md = torch.zeros(v, dtype=torch.float64)
        use_fresh = self.sampler.fresh and not self.sampler.uses_all
        self.fresh = torch.stack([self.sampler.fresh_rows() for _ in range(v)]) if use_fresh else None

    def add(self, tap: int, group_taps: list[torch.Tensor]) -> None:
        t = self.teacher
        student = torch.cat(
            [x.reshape(self.v, *mask.shape, -1)[:, mask] for x, mask in zip(group_taps, t.row_masks, strict=True)], dim=1
        )[:, t.row_order]
        student = _normalised(student)
        if self.fresh is None:
            if not self.sampler.uses_all:
                student = student[:, self.sampler.for_tap(tap)]
            self.md += manifold_distance(self.rows[tap], student, self.gram[tap])
        else:
            index = self.fresh.unsqueeze(-1).expand(-1, -1, student.shape[-1])
            self.md += manifold_distance(self.rows[tap][self.fresh], torch.gather(student, 1, index))


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
    _check_teacher(teacher, method)
    num_layers = adapter.num_layers
    selected = torch.arange(adapter.unit_counts(kind)[layer]) if units is None else torch.as_tensor(units)
    trajectory = set(method.trajectory(layer, num_layers))
    base_masks = _base_head_masks(adapter, layer, kind, method)
    sampler = RowSampler(len(teacher.row_order), method.md_rows, method.md_fresh_subsets, seed, _rng_stream(layer, kind))
    md = _MdAccumulator(teacher, method, trajectory, sampler)
    directions = adapter.neuron_directions(layer) if kind == "neuron" else None

    # Per group: layer l run once on the cached input, its resume points kept.
    states = []
    for g, group in enumerate(teacher.groups):
        x, ctx = adapter.embed(group)
        if base_masks is None:
            x = teacher.layer_inputs[g][layer]
        else:
            for k in range(layer):
                x, _ = adapter.layer(k, x, ctx, head_mask=base_masks[k])
        attn_resid, head_out = adapter.attention(layer, x, ctx, per_head=(kind == "head"))
        a = adapter.after_attention(layer, attn_resid)
        ffn_out, act = adapter.ffn(layer, a)
        states.append({"x": x, "ctx": ctx, "attn_resid": attn_resid, "head_out": head_out, "a": a,
                       "ffn_out": ffn_out, "act": act})

    rows = []
    for chunk_units in tqdm(torch.split(selected, chunk), desc=f"layer {layer} {kind}s", disable=not progress, mininterval=5):
        v = len(chunk_units)
        md.start_chunk(v)
        variants = []
        for s in states:
            b, t, d = s["x"].shape
            if kind == "head":
                resid_v = (s["attn_resid"].unsqueeze(0) - s["head_out"][chunk_units]).reshape(v * b, t, d)
                a_v = adapter.after_attention(layer, resid_v)
                ffn_out_v, _ = adapter.ffn(layer, a_v)
            else:
                removed = torch.einsum("btv,vd->vbtd", s["act"][..., chunk_units], directions[chunk_units])
                ffn_out_v = (s["ffn_out"].unsqueeze(0) - removed).reshape(v * b, t, d)
                a_v = s["a"].repeat(v, 1, 1)
            variants.append((a_v, ffn_out_v, adapter.repeat_context(s["ctx"], v)))
        if layer in trajectory:
            md.add(layer, [adapter.layer_tap(layer, s["x"].repeat(v, 1, 1), a_v, f_v)
                           for s, (a_v, f_v, _) in zip(states, variants, strict=True)])
        hidden = [adapter.after_ffn(layer, a_v, f_v) for a_v, f_v, _ in variants]
        for k in range(layer + 1, num_layers):
            outputs = [adapter.layer(k, h, ctx_v) for h, (_, _, ctx_v) in zip(hidden, variants, strict=True)]
            hidden = [h for h, _ in outputs]
            if k in trajectory:
                md.add(k, [tap for _, tap in outputs])
        group_logits = [adapter.logits(h, ctx_v) for h, (_, _, ctx_v) in zip(hidden, variants, strict=True)]
        logits = torch.cat([z.reshape(v, -1, z.shape[-1]) for z in group_logits], dim=1)
        logits = logits[:, torch.argsort(teacher.sentence_order)]
        kl = _kl(method, teacher.logits, logits)
        for i, unit in enumerate(chunk_units.tolist()):
            rows.append({"layer": layer, "kind": kind, "index": unit, "md": float(md.md[i]), "kl": float(kl[i])})
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
    """Oracle: one full masked forward of the padded batch per unit, Gram matrices built directly in float64."""
    _check_teacher(teacher, method)
    num_layers = adapter.num_layers
    trajectory = method.trajectory(layer, num_layers)
    row_mask = md_row_mask(teacher.batch, method.md_include_padding)
    sampler = RowSampler(int(row_mask.sum()), method.md_rows, method.md_fresh_subsets, seed, _rng_stream(layer, kind))
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
            ft, fs = _normalised(teacher.tap_rows[k]), _normalised(taps[k][row_mask])
            if not sampler.uses_all:
                idx = fresh if fresh is not None else sampler.for_tap(k)
                ft, fs = ft[idx], fs[idx]
            md += float(manifold_distance_direct(ft, fs))
        kl = float(_kl(method, teacher.logits, logits.unsqueeze(0))[0])
        rows.append({"layer": layer, "kind": kind, "index": unit, "md": md, "kl": kl})
    return pd.DataFrame(rows, columns=["layer", "kind", "index", "md", "kl"])
