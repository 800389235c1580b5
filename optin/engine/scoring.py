"""Exact OPTIN importance: the drift of downstream taps and logits when one unit is masked.

Two paths compute the same numbers, for every family's unit kinds (heads, neurons, tokens, CNN
channels):
- ``score_naive``: one full masked forward of the padded calibration batch per unit (the oracle);
- ``score_layer``: the engine. From the cached input of layer l it runs layer l once, then, for a
  chunk of V units, removes each unit's additive contribution (a head's share of the attention
  output, a neuron's rank-one share of the FFN output, a channel zeroed in the layer's activation),
  stacks the V variants along the rows and runs only what follows: the rest of layer l and layers
  l+1..L-1, one pass per chunk.

The engine materialises only the token rows that MD compares (`TokenLayout`): without padding
rows, every Linear/LayerNorm/activation skips the padding, which real tokens never attend to.
Rows are in canonical (sequence, position) order in both paths.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from optin.arch.base import EncoderAdapter, TokenLayout
from optin.engine.losses import kl_divergence, manifold_distance, manifold_distance_direct, teacher_gram_dd
from optin.engine.settings import OptinMethod
from optin.engine.device import tf32_matmuls


@dataclass
class Teacher:
    """The unpruned model on one calibration batch, features as the MD rows of that batch."""

    batch: dict[str, torch.Tensor]
    include_padding: bool               # are padding positions MD rows?
    layer_inputs: list[torch.Tensor]    # layer 0..L inputs, [R, D]
    taps: list[torch.Tensor]            # per layer, [R, D]
    logits: torch.Tensor                # [N, C]

    @property
    def rows(self) -> torch.Tensor | None:
        return md_row_mask(self.batch, self.include_padding)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> Teacher:
        return cls(**data)


def to_cpu(value):
    """Tensors of a (nested) teacher moved to the CPU: saved so that any job, GPU or not, reads the cache."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def md_row_mask(batch: dict[str, torch.Tensor], include_padding: bool) -> torch.Tensor | None:
    """[N, T] positions that are MD rows; None when every position is (images have no padding)."""
    if "attention_mask" not in batch:
        return None
    mask = batch["attention_mask"].bool()
    return torch.ones_like(mask) if include_padding else mask


@torch.no_grad()
def run_teacher(adapter: EncoderAdapter, batch: dict[str, torch.Tensor], include_padding: bool = True) -> Teacher:
    inputs, taps, logits = adapter.forward(batch, rows=md_row_mask(batch, include_padding))
    return Teacher(batch=batch, include_padding=include_padding, layer_inputs=inputs, taps=taps, logits=logits)


class RowSampler:
    """Chooses the K token rows compared by manifold distillation.

    A tap with at most K rows uses all of them (the Gram difference is then permutation invariant,
    so the loss is deterministic). Otherwise one seeded subset per tap, or a fresh one per unit (the
    authors' code), which needs every tap to have the same rows.
    """

    def __init__(self, k: int, fresh: bool, seed: int, stream: int):
        self.k, self.fresh = k, fresh
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + stream)
        self.fixed: dict[int, torch.Tensor] = {}

    def uses_all(self, n_rows: int) -> bool:
        return n_rows <= self.k

    def for_tap(self, tap: int, n_rows: int) -> torch.Tensor:
        if tap not in self.fixed:
            # drawn on the CPU: the same rows whichever device scores
            self.fixed[tap] = torch.randperm(n_rows, generator=self.generator, device="cpu")[: self.k]
        return self.fixed[tap]

    def fresh_rows(self, n_rows: int) -> torch.Tensor:
        return torch.randperm(n_rows, generator=self.generator, device="cpu")[: self.k]


def fresh_row_count(sampler: RowSampler, tap_rows: list[int]) -> int | None:
    """Rows that fresh per-unit subsets are drawn from, or None when they are not drawn."""
    if not sampler.fresh or all(sampler.uses_all(n) for n in tap_rows):
        return None
    if len(set(tap_rows)) != 1:
        raise ValueError(
            f"md_fresh_subsets draws one row subset per unit for every tap, but these taps have {sorted(set(tap_rows))} "
            "rows; use fixed subsets (md_fresh_subsets: false) for this model"
        )
    return tap_rows[0]


@contextlib.contextmanager
def _full_precision(device: torch.device):
    """The losses outside the masked forwards' precision (scoring.precision): MD's Gram products and
    the KL run in float32, never TF32 or autocast (sums in float64), whatever the features came in."""
    with torch.autocast(device.type, enabled=False), tf32_matmuls(False):
        yield


def _kl(method: OptinMethod, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    with _full_precision(student_logits.device):
        return kl_divergence(
            teacher_logits, student_logits.float(),
            temperature=method.temperature, divide_logits=method.kl_divide_logits,
            reduction=method.kl_reduction, dtype=torch.float64 if method.kl_float64 else torch.float32,
            clamp=method.kl_clamp,
        )


def _check_teacher(teacher: Teacher, method: OptinMethod) -> None:
    if "attention_mask" not in teacher.batch:
        return  # no padding to include or not
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
        mask = torch.ones(n_heads, device=adapter.device)
        if index < layer and n_heads:
            mask[-1] = 0.0
        masks.append(mask)
    return masks


def _rng_stream(layer: int, kind: str) -> int:
    return layer * 2 + (0 if kind == "head" else 1)  # neurons, tokens and channels share the second stream


def _normalised(rows: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(rows, dim=-1)


class _MdAccumulator:
    """Sums MD over the trajectory taps for a chunk of V variants."""

    def __init__(self, teacher: Teacher, taps: set[int], sampler: RowSampler, mean: bool = False):
        self.sampler, self.mean = sampler, mean
        self.full_rows = {k: _normalised(teacher.taps[k]) for k in sorted(taps)}
        self.device = teacher.logits.device
        self.fresh_n = fresh_row_count(sampler, [len(rows) for rows in self.full_rows.values()])
        self.rows = {
            k: rows if sampler.uses_all(len(rows)) or self.fresh_n else rows[sampler.for_tap(k, len(rows))]
            for k, rows in self.full_rows.items()
        }
        with _full_precision(self.device):  # built inside the caller's autocast
            self.gram = {} if self.fresh_n else {k: teacher_gram_dd(rows) for k, rows in self.rows.items()}

    def start_chunk(self, v: int) -> None:
        self.v = v
        self.md = torch.zeros(v, dtype=torch.float64, device=self.device)
        # drawn on the CPU (the same rows on every device), gathered where the features are
        self.fresh = torch.stack([self.sampler.fresh_rows(self.fresh_n) for _ in range(v)]).to(self.device) if self.fresh_n else None

    def add(self, tap: int, features: torch.Tensor, teacher_rows: torch.Tensor | None = None) -> None:
        """``teacher_rows`` [V, R'] picks, per variant, the teacher rows the student still has (a
        removed token's row is gone from the student)."""
        with _full_precision(self.device):
            self._add(tap, features.float(), teacher_rows)

    def _add(self, tap: int, features: torch.Tensor, teacher_rows: torch.Tensor | None) -> None:
        student = _normalised(features.reshape(self.v, -1, features.shape[-1]))
        n_rows = len(self.full_rows[tap])
        if teacher_rows is not None:
            if self.sampler.uses_all(n_rows):
                self.md += self._reduced(manifold_distance(self.full_rows[tap][teacher_rows], student), student.shape[1])
                return
            # Row subset S of the full batch: each variant compares the rows of S it still has.
            for i in range(self.v):
                subset = self.fresh[i] if self.fresh is not None else self.sampler.for_tap(tap, n_rows)
                kept, student_index = subset_in_kept_rows(subset, teacher_rows[i], n_rows)
                self.md[i] += self._reduced(manifold_distance(self.full_rows[tap][kept], student[i, student_index][None])[0], len(kept))
            return
        if self.fresh is None:
            if not self.sampler.uses_all(n_rows):
                student = student[:, self.sampler.for_tap(tap, n_rows)]
            self.md += self._reduced(manifold_distance(self.rows[tap], student, self.gram[tap]), student.shape[1])
        else:
            index = self.fresh.unsqueeze(-1).expand(-1, -1, student.shape[-1])
            self.md += self._reduced(manifold_distance(self.rows[tap][self.fresh], torch.gather(student, 1, index)), index.shape[1])

    def _reduced(self, md: torch.Tensor, rows: int) -> torch.Tensor:
        """``md_reduction: mean``: the mean over the K x K Gram entries, comparable across taps of different row counts."""
        return md / float(rows) ** 2 if self.mean else md


def subset_in_kept_rows(subset: torch.Tensor, kept_rows: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``subset`` (indices into the full batch) that a variant keeping ``kept_rows``
    still has, and where they sit among that variant's rows. Index bookkeeping on the CPU, where
    the row sampler draws ``subset``."""
    subset, kept_rows = subset.cpu(), kept_rows.cpu()
    position = torch.full((n_rows,), -1, dtype=torch.long, device="cpu")
    position[kept_rows] = torch.arange(len(kept_rows), device="cpu")
    kept = subset[position[subset] >= 0]
    return kept, position[kept]


def _token_variants(layout: TokenLayout, positions: torch.Tensor) -> tuple[TokenLayout, torch.Tensor]:
    """Layout of V stacked copies of the batch, copy i without token ``positions[i]`` in any
    sequence, and the [V, R'] rows of the full batch each copy keeps."""
    v, device = len(positions), positions.device
    keep = torch.ones(v, layout.n, layout.t, dtype=torch.bool, device=device)
    keep[torch.arange(v, device=device), :, positions] = False
    full = torch.arange(layout.n * layout.t, device=device).view(layout.n, layout.t)
    kept_rows = torch.stack([full[keep[i]] for i in range(v)])
    return TokenLayout.from_rows(keep.view(v * layout.n, layout.t), None), kept_rows


def token_units(adapter: EncoderAdapter, layout: TokenLayout) -> torch.Tensor:
    """Token positions that can be removed: all but the prefix (CLS, distillation) tokens."""
    return torch.arange(adapter.prefix_tokens, layout.t, device=layout.first_rows.device)


def score_layer(
    adapter,
    teacher: Teacher,
    layer: int,
    kind: str,
    method: OptinMethod,
    seed: int,
    chunk: int = 32,
    progress: bool = False,
    units: list[int] | None = None,
) -> pd.DataFrame:
    """Raw (md, kl) of every unit of ``kind`` in ``layer`` (or of ``units``) with the prefix-cache
    engine: columns layer, kind, index, md, kl. ``kind`` is one of the adapter's family's unit kinds."""
    if kind == "channel":
        return _score_channels(adapter, teacher, layer, method, seed, chunk, progress, units)
    return _score_encoder_units(adapter, teacher, layer, kind, method, seed, chunk, progress, units)


@torch.no_grad()
def _score_encoder_units(
    adapter: EncoderAdapter, teacher: Teacher, layer: int, kind: str, method: OptinMethod, seed: int, chunk: int,
    progress: bool, units: list[int] | None,
) -> pd.DataFrame:
    _check_teacher(teacher, method)
    num_layers = adapter.num_layers
    trajectory = set(method.trajectory(kind, layer, num_layers, adapter.final_tap, adapter.decoder_taps))
    base_masks = _base_head_masks(adapter, layer, kind, method)
    x, layout = adapter.embed(teacher.batch, teacher.rows)
    if kind == "token":
        if layout.index is not None:
            raise ValueError("token units need a batch without padding")
        selected = token_units(adapter, layout) if units is None else torch.as_tensor(units, device=x.device)
    else:
        n_units = adapter.unit_counts(kind)[layer]
        selected = torch.arange(n_units, device=x.device) if units is None else torch.as_tensor(units, device=x.device)
    if base_masks is None:
        x = teacher.layer_inputs[layer]
    else:
        for k in range(layer):
            x, _ = adapter.layer(k, x, layout, head_mask=base_masks[k])
    sampler = RowSampler(method.md_rows, method.md_fresh_subsets, seed, _rng_stream(layer, kind))
    md = _MdAccumulator(teacher, trajectory, sampler, mean=method.md_reduction == "mean")

    if kind != "token":
        # Layer l once; its resume points are reused by every chunk.
        attn_resid, head_out = adapter.attention(layer, x, layout, per_head=(kind == "head"))
        a = adapter.after_attention(layer, attn_resid)
        ffn_out, act = adapter.ffn(layer, a)
        directions = adapter.neuron_directions(layer) if kind == "neuron" else None
        r, d = attn_resid.shape  # the attention may change the row count (Swin's patch merging)

    rows = []
    for chunk_units in tqdm(torch.split(selected, chunk), desc=f"layer {layer} {kind}s", disable=not progress, mininterval=5):
        v = len(chunk_units)
        md.start_chunk(v)
        kept_rows = None
        # The head reads some layer taps (stage outputs); those before this pass are the teacher's.
        readout = {k: teacher.taps[k].repeat(v, 1) for k in adapter.readout_layers if k < layer}
        if kind == "token":
            # Token p leaves the input of layer l: layers l..L-1 run in full on the other rows.
            layout_v, kept_rows = _token_variants(layout, chunk_units)
            h = x[kept_rows.reshape(-1)]
            first = layer
        else:
            layout_v = layout.repeat(v)
            if kind == "head":
                resid_v = (attn_resid.unsqueeze(0) - head_out[chunk_units]).reshape(v * r, d)
                a_v = adapter.after_attention(layer, resid_v)
                ffn_out_v, _ = adapter.ffn(layer, a_v)
            else:
                removed = _neuron_removal(adapter, act, directions, chunk_units)
                ffn_out_v = (ffn_out.unsqueeze(0) - removed).reshape(v * r, d)
                a_v = a.repeat(v, 1)
            if layer in trajectory or layer in adapter.readout_layers:
                tap = adapter.tap_at(layer, x.repeat(v, 1), a_v, ffn_out_v)
                readout[layer] = tap
                if layer in trajectory:
                    md.add(layer, tap)
            h = adapter.after_ffn(layer, a_v, ffn_out_v)
            first = layer + 1
        for k in range(first, num_layers):
            h, tap = adapter.layer(k, h, layout_v)
            readout[k] = tap
            if k in trajectory:
                md.add(k, tap, kept_rows)
        head_taps, logits = adapter.head(h, layout_v, {k: readout[k] for k in adapter.readout_layers})
        for offset, tap in enumerate(head_taps):
            if num_layers + offset in trajectory:
                md.add(num_layers + offset, tap, kept_rows)
        kl = _kl(method, teacher.logits, logits.reshape(v, -1, logits.shape[-1]))
        for i, unit in enumerate(chunk_units.tolist()):
            rows.append({"layer": layer, "kind": kind, "index": unit, "md": float(md.md[i]), "kl": float(kl[i])})
    return pd.DataFrame(rows, columns=["layer", "kind", "index", "md", "kl"])


def _neuron_removal(adapter, act: torch.Tensor, directions: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """[V, R, D]: what each unit adds to the FFN output. A neuron's is rank one; a group of g channels
    (``adapter.neuron_group``, the decoder family's grouped MLP channels) adds act[:, group] @ W[group]."""
    g = adapter.neuron_group
    if g == 1:
        return torch.einsum("rv,vd->vrd", act[:, units], directions[units])
    return torch.einsum("rvg,vgd->vrd", act.view(len(act), -1, g)[:, units], directions.view(-1, g, directions.shape[-1])[units])


def score_naive(
    adapter,
    teacher: Teacher,
    layer: int,
    kind: str,
    method: OptinMethod,
    seed: int,
    units: list[int] | None = None,
) -> pd.DataFrame:
    """Oracle: one full masked forward of the padded batch per unit, Gram matrices built directly in float64."""
    if kind == "channel":
        return _score_channels_naive(adapter, teacher, layer, method, seed, units)
    return _score_encoder_units_naive(adapter, teacher, layer, kind, method, seed, units)


@torch.no_grad()
def _score_encoder_units_naive(
    adapter: EncoderAdapter, teacher: Teacher, layer: int, kind: str, method: OptinMethod, seed: int,
    units: list[int] | None,
) -> pd.DataFrame:
    _check_teacher(teacher, method)
    num_layers = adapter.num_layers
    trajectory = method.trajectory(kind, layer, num_layers, adapter.final_tap, adapter.decoder_taps)
    row_mask = teacher.rows.reshape(-1) if teacher.rows is not None else None
    sampler = RowSampler(method.md_rows, method.md_fresh_subsets, seed, _rng_stream(layer, kind))
    fresh_n = fresh_row_count(sampler, [len(teacher.taps[k]) for k in trajectory])
    base = _base_head_masks(adapter, layer, kind, method)
    if units is None:
        if kind == "token":
            units = token_units(adapter, adapter.embed(teacher.batch)[1]).tolist()
        else:
            units = range(adapter.unit_counts(kind)[layer])
    rows = []
    for unit in units:
        head_masks = ([m.clone() for m in base] if base else
                      [torch.ones(n, device=adapter.device) for n in adapter.unit_counts("head")])
        neuron_masks = [torch.ones(n, device=adapter.device) for n in adapter.unit_counts("neuron")]
        drop = None
        if kind == "token":
            drop = (layer, unit)
        else:
            (head_masks if kind == "head" else neuron_masks)[layer][unit] = 0.0
        _, taps, logits = adapter.forward(teacher.batch, head_masks, neuron_masks, drop_token=drop)
        fresh = sampler.fresh_rows(fresh_n) if fresh_n else None
        md = 0.0
        for k in trajectory:
            ft, fs = _normalised(teacher.taps[k]), _normalised(taps[k])
            idx = None if sampler.uses_all(len(ft)) else (fresh if fresh is not None else sampler.for_tap(k, len(ft)))
            if drop is not None:
                # The student lost token p from layer l on: compare the rows it still has.
                # row indices on the CPU, where the sampler draws
                kept_rows = torch.nonzero(torch.arange(len(ft), device="cpu") % (len(ft) // len(logits)) != unit).squeeze(1)
                subset = torch.arange(len(ft), device="cpu") if idx is None else idx
                kept, student_index = subset_in_kept_rows(subset, kept_rows, len(ft))
                ft, fs = ft[kept], fs[student_index]
            else:
                if row_mask is not None:
                    fs = fs[row_mask]
                if idx is not None:
                    ft, fs = ft[idx], fs[idx]
            md += float(manifold_distance_direct(ft, fs)) / (len(ft) ** 2 if method.md_reduction == "mean" else 1.0)
        kl = float(_kl(method, teacher.logits, logits.unsqueeze(0))[0])
        rows.append({"layer": layer, "kind": kind, "index": unit, "md": md, "kl": kl})
    return pd.DataFrame(rows, columns=["layer", "kind", "index", "md", "kl"])


# -- CNN channels (optin.arch.cnn) ---------------------------------------------------------------------
def _channel_trajectory(adapter, layer: int, method: OptinMethod) -> list[int]:
    return method.trajectory("channel", layer, adapter.num_layers, adapter.final_tap)


@torch.no_grad()
def _score_channels(
    adapter, teacher: Teacher, layer: int, method: OptinMethod, seed: int, chunk: int, progress: bool,
    units: list[int] | None,
) -> pd.DataFrame:
    """The channels of CNN layer ``layer``: its activation is computed once from the cached layer
    input; V copies, each with one channel zeroed, run the rest of the network as one batch."""
    num_layers = adapter.num_layers
    trajectory = set(_channel_trajectory(adapter, layer, method))
    x = teacher.layer_inputs[layer]
    selected = torch.arange(adapter.unit_counts()[layer], device=x.device) if units is None else torch.as_tensor(units, device=x.device)
    n = len(x)
    act = adapter.activation(layer, x)
    sampler = RowSampler(method.md_rows, method.md_fresh_subsets, seed, _rng_stream(layer, "channel"))
    md = _MdAccumulator(teacher, trajectory, sampler, mean=method.md_reduction == "mean")
    rows = []
    for chunk_units in tqdm(torch.split(selected, chunk), desc=f"layer {layer} channels", disable=not progress, mininterval=5):
        v = len(chunk_units)
        md.start_chunk(v)
        act_v = act.unsqueeze(0).repeat(v, *([1] * act.dim()))
        act_v[torch.arange(v, device=act_v.device), :, chunk_units] = 0.0
        h, tap = adapter.finish(layer, x, act_v.reshape(v * n, *act.shape[1:]))
        if layer in trajectory:
            md.add(layer, tap)
        for k in range(layer + 1, num_layers):
            h, tap = adapter.layer(k, h)
            if k in trajectory:
                md.add(k, tap)
        logits = adapter.logits(h)
        kl = _kl(method, teacher.logits, logits.reshape(v, n, -1))
        for i, unit in enumerate(chunk_units.tolist()):
            rows.append({"layer": layer, "kind": "channel", "index": unit, "md": float(md.md[i]), "kl": float(kl[i])})
    return pd.DataFrame(rows, columns=["layer", "kind", "index", "md", "kl"])


@torch.no_grad()
def _score_channels_naive(
    adapter, teacher: Teacher, layer: int, method: OptinMethod, seed: int, units: list[int] | None,
) -> pd.DataFrame:
    """One full masked forward of the calibration batch per channel, Gram matrices built directly."""
    trajectory = _channel_trajectory(adapter, layer, method)
    sampler = RowSampler(method.md_rows, method.md_fresh_subsets, seed, _rng_stream(layer, "channel"))
    fresh_n = fresh_row_count(sampler, [len(teacher.taps[k]) for k in trajectory])
    rows = []
    for unit in range(adapter.unit_counts()[layer]) if units is None else units:
        masks = [torch.ones(c, device=adapter.device) for c in adapter.unit_counts()]
        masks[layer][unit] = 0.0
        _, taps, logits = adapter.forward(teacher.batch, masks)
        fresh = sampler.fresh_rows(fresh_n) if fresh_n else None
        md = 0.0
        for k in trajectory:
            ft, fs = _normalised(teacher.taps[k]), _normalised(taps[k])
            if not sampler.uses_all(len(ft)):
                idx = fresh if fresh is not None else sampler.for_tap(k, len(ft))
                ft, fs = ft[idx], fs[idx]
            md += float(manifold_distance_direct(ft, fs)) / (len(ft) ** 2 if method.md_reduction == "mean" else 1.0)
        kl = float(_kl(method, teacher.logits, logits.unsqueeze(0))[0])
        rows.append({"layer": layer, "kind": "channel", "index": unit, "md": md, "kl": kl})
    return pd.DataFrame(rows, columns=["layer", "kind", "index", "md", "kl"])


# Copies per chunk when scoring on the CPU with `scoring.chunk: auto` (memory is rarely the limit there).
CPU_AUTO_CHUNK = 32


def chunk_for_memory(fixed_bytes: float, per_copy_bytes: float, budget_bytes: float, limit: int = 4096) -> int:
    """The most masked copies whose peak memory (fixed + V x per copy) fits ``budget_bytes``, at
    least 1 and at most ``limit``."""
    if per_copy_bytes <= 0:
        return limit
    fits = int((budget_bytes - fixed_bytes) // per_copy_bytes)
    return max(1, min(limit, fits))


def probe_chunk(score, n_units: int, peak_bytes, budget_bytes: float, limit: int = 4096) -> int:
    """Chunk size from the peak memory of scoring 1 and of 2 masked copies, extrapolated linearly
    to ``budget_bytes``. ``score(copies, units)`` scores ``units`` in chunks of ``copies``;
    ``peak_bytes(run)`` calls ``run`` and returns the peak memory it took.

    The probes score copies of the layer's first unit, the only one every layer with units has
    (Swin's first stage has a single head; probing units 0 and 1 read past its head contributions)."""
    if n_units < 1:
        return 1
    peaks = [peak_bytes(lambda copies=copies: score(copies, [0] * copies)) for copies in (1, 2)]
    per_copy = peaks[1] - peaks[0]
    return chunk_for_memory(peaks[0] - per_copy, per_copy, budget_bytes, limit)


def gpu_memory_budget(device, jobs_per_gpu: int = 1, headroom: float = 0.8) -> float:
    """Bytes this job may add on its GPU: ``headroom`` of its share (1 / ``jobs_per_gpu`` of the
    card, less what it holds already), and never more than is free now. Sizing by the share, not
    by what happens to be free, keeps jobs that start together on one GPU from each claiming most
    of it."""
    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    # What this job holds but does not use (its allocator's cache) is free for it too.
    available = free + torch.cuda.memory_reserved(device) - allocated
    return headroom * max(0.0, min(available, total / max(1, jobs_per_gpu) - allocated))


def _cuda_peak_bytes(run, device) -> float:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) - base)


def auto_chunk(score, device, n_units: int, jobs_per_gpu: int = 1) -> int:
    """Chunk size for ``score(copies, units)`` on ``device`` (config ``scoring.chunk: auto``): on a
    GPU probed (``probe_chunk``) against this job's share of the card; on the CPU a fixed size."""
    if device.type != "cuda":
        return CPU_AUTO_CHUNK
    return probe_chunk(score, n_units, lambda run: _cuda_peak_bytes(run, device), gpu_memory_budget(device, jobs_per_gpu))
