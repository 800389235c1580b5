"""The library's front door: OPTIN on one model in a notebook, without the workflow.

``optin.prune(model, calibration, budget=0.5)`` runs the workflow's steps in one process, with the
same code: the unpruned teacher on the calibration batch (optin.scoring.run_teacher), every head and
neuron (CNNs: channel) scored by the prefix-cache engine (score_layer), the scores combined as the
method says (optin.methods.combine), the mask searched under the family's cost model (optin.search)
and the model physically sliced by its family's adapter. On the same model, batch, seed and settings
it gives the workflow's mask (tests/test_tiny_pipeline.py checks it on every arm).

What it does not do, and where to find it: peer methods (kwon, nvit, magnitude, random, the LLM
peers), OPTIN-tau's token schedule, accuracy and latency measurement, many seeds and budgets: the
workflow (config methods.<name>.kind, prune_tokens, the evaluate rule).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from optin.masks import Kept


@dataclass
class Pruned:
    """What ``optin.prune`` returns. ``model`` is the slim model (a smaller instance of the dense
    model's family, weights copied, no masks); ``search`` holds the fields of the workflow's mask
    file (budget, base_macs, achieved_macs, achieved_ratio, heads_kept, ...)."""

    model: Any
    kept: Kept
    scores: pd.DataFrame          # one row per unit: layer, kind, index, md, kl, kl_term, importance
    search: dict
    family: str
    adapter: Any = field(repr=False)

    @property
    def macs(self) -> dict:
        """Dense and kept MACs of the prunable part under the search's cost model, and their ratio."""
        return {"dense": self.search["base_macs"], "kept": self.search["achieved_macs"],
                "ratio": self.search["achieved_ratio"]}

    def save(self, path, tokenizer=None, **spec) -> Path:
        """Save the slim model where its family's usual loader reads it back (docs/library.md):
        a text or decoder model with its tokenizer; a timm ViT with ``timm_name`` and ``timm_kwargs``."""
        accepts = inspect.signature(self.adapter.save_slim).parameters
        extra = {"tokenizer": tokenizer} if "tokenizer" in accepts else {}
        if tokenizer is not None and not extra:
            raise TypeError(f"the {self.family} family saves no tokenizer")
        self.adapter.save_slim(self.model, path=path, **extra, **spec)
        return Path(path)


def method_settings(method) -> dict:
    """``"optin"`` or a mapping of OPTIN settings (a config.yaml ``methods`` entry) -> the settings."""
    if method == "optin":
        return {}
    if not isinstance(method, Mapping):
        raise ValueError(f"method must be 'optin' or a mapping of OPTIN settings (optin.methods.OptinMethod), got {method!r}")
    settings = dict(method)
    kind = settings.pop("kind", "optin")
    if kind != "optin":
        raise ValueError(f"optin.prune runs OPTIN (method kind 'optin'); kind {kind!r} runs in the workflow "
                         "(config.yaml methods.<name>.kind)")
    return settings


def _batches(calibration) -> list[dict]:
    batches = [calibration] if isinstance(calibration, Mapping) else list(calibration)
    if not batches or not all(isinstance(b, Mapping) and b for b in batches):
        raise ValueError("calibration must be a batch of model inputs (a mapping such as a tokenizer's output or "
                         "{'pixel_values': tensor}) or a list of such batches")
    return [dict(b) for b in batches]


def _sequence_length(batch: dict, teacher) -> float:
    """Tokens per sample that the encoder MAC model prices: the real (unpadded) tokens of a text
    batch, every token of an image batch."""
    mask = batch.get("attention_mask")
    if mask is not None:
        return float(mask.sum()) / mask.shape[0]
    return teacher.layer_inputs[0].shape[0] / teacher.logits.shape[0]


def prune(model, calibration, *, budget: float, method="optin", family: str | None = None, seed: int = 0,
          mac_seq_len: float | None = None, latency_table=None, chunk: int = 32, progress: bool = False) -> Pruned:
    """Prune ``model`` to ``budget`` of its MACs (or, with ``budget_metric: latency`` in the method
    settings, of its latency predicted by ``latency_table``) with OPTIN, and slice it.

    - ``calibration``: the model's inputs for a few samples on the model's device (a tokenizer's
      output, ``{"pixel_values": ...}``); a list of two batches when the settings say
      ``same_batch: false`` (neurons scored on the second, the authors' code).
    - ``method``: ``"optin"`` (the paper's settings) or a mapping of OPTIN settings, as in
      config.yaml's ``methods`` (``semantics: reference``, ``lambda_c``, ``trajectory_horizon``...).
    - ``family``: a registered family name (``optin.arch.FAMILIES``) to limit the adapter lookup.
    - ``seed``: the seed of MD's row subsets, as the workflow's calibration seed.
    - ``mac_seq_len``: tokens per sample the MAC model prices (encoders); default the calibration
      batch's mean real tokens (the workflow's default is the test split's mean).
    """
    from optin.arch import adapter_for
    from optin.arch.registry import family as family_entry
    from optin.methods import OptinMethod, combine
    from optin.scoring import run_teacher, score_layer

    if not 0.0 < float(budget) <= 1.0:
        raise ValueError(f"budget must be in (0, 1] (the fraction of the dense cost kept), got {budget!r}")
    settings = OptinMethod.from_config(method_settings(method))
    if settings.prune_tokens:
        raise ValueError("prune_tokens (OPTIN-tau's token schedule) runs in the workflow (evaluate merges tokens); "
                         "optin.prune keeps every token")
    batches = _batches(calibration)
    if not settings.same_batch and len(batches) < 2:
        raise ValueError("same_batch: false scores neurons on a second calibration batch: pass a list of two batches")
    adapter = adapter_for(model.eval(), family)
    entry = family_entry(family or _registered_family(adapter))
    if settings.budget_metric == "latency" and entry.cost_model != "encoder":
        raise ValueError(f"a latency budget needs a latency table of identical layers; family {entry.name!r} "
                         f"prices units by {entry.cost_model!r}")
    if settings.tap != "default":
        adapter.tap_position = settings.tap
    teachers = [run_teacher(adapter, b, include_padding=settings.md_include_padding) for b in batches[:2]]
    parts = []
    for layer in range(adapter.num_layers):
        for kind in entry.scored_kinds(layer):
            if kind == "token":  # tokens matter only to OPTIN-tau's schedule
                continue
            teacher = teachers[0] if (settings.same_batch or kind != "neuron") else teachers[1]
            parts.append(score_layer(adapter, teacher, layer, kind, settings, seed, chunk=chunk, progress=progress))
    scores = combine(pd.concat(parts, ignore_index=True), settings, adapter.num_layers)
    kept, search = _search(adapter, entry.cost_model, scores, float(budget), settings, batches[0], teachers[0],
                           mac_seq_len, latency_table)
    search["kept"] = kept.to_json()
    return Pruned(model=adapter.slim(kept), kept=kept, scores=scores, search=search, family=entry.name, adapter=adapter)


def _registered_family(adapter) -> str:
    """The registry name of an adapter's family (a timm ViT's adapter belongs to family vit)."""
    from optin.arch.registry import FAMILIES

    if adapter.family in FAMILIES:
        return adapter.family
    return next(name for name, entry in FAMILIES.items() if entry.adapter_module == type(adapter).__module__)


def _search(adapter, cost_model: str, scores: pd.DataFrame, budget: float, settings, batch: dict, teacher,
            mac_seq_len, latency_table) -> tuple[Kept, dict]:
    """The family's mask search, priced as the workflow's solve rule prices it."""
    from optin import flops
    from optin.search import search_channels, search_latency, search_mac

    if cost_model == "channels":
        size = batch["pixel_values"].shape[-1]
        return search_channels(scores, budget=budget, ops=adapter.mac_ops(size), channels_per_layer=adapter.unit_counts(),
                               min_per_layer=adapter.min_channels(), ranking=settings.channel_ranking)
    heads, neurons = adapter.unit_counts("head"), adapter.unit_counts("neuron")
    if cost_model == "per_layer":
        head_cost, neuron_cost = adapter.unit_macs(adapter.patch_grid(tuple(batch["pixel_values"].shape[-2:])))
        base = sum(h * c for h, c in zip(heads, head_cost, strict=True)) + sum(n * c for n, c in zip(neurons, neuron_cost, strict=True))
        return search_mac(scores, budget=budget, head_cost=head_cost, neuron_cost=neuron_cost, base_macs=base,
                          heads_per_layer=heads, neurons_per_layer=neurons)
    if cost_model == "gqa":
        from optin.arch.llama import unit_macs

        context = batch["input_ids"].shape[1]
        costs = unit_macs(adapter.config, context, adapter.neuron_group)
        group = adapter.config.num_attention_heads // adapter.config.num_key_value_heads
        kv_heads = adapter.config.num_key_value_heads
        base = sum(h * costs["head"] + kv_heads * costs["kv"] + n * costs["neuron"] for h, n in zip(heads, neurons, strict=True))
        kept, search = search_mac(scores, budget=budget, head_cost=costs["head"], neuron_cost=costs["neuron"], base_macs=base,
                                  heads_per_layer=heads, neurons_per_layer=neurons, kv_heads=(costs["kv"], group))
        return kept, {**search, "mac_context": context}
    seq_len = float(mac_seq_len) if mac_seq_len is not None else _sequence_length(batch, teacher)
    hidden, head_dim = adapter.hidden_size, adapter.head_dim
    base = flops.encoder_macs(heads, neurons, seq_len, hidden, head_dim)
    if settings.budget_metric == "latency":
        from optin.latency_table import LatencyTable

        if latency_table is None:
            raise ValueError("budget_metric: latency needs latency_table (a LatencyTable or the path of the workflow's "
                             "results/latency/<model>/<dataset>/<device>.json)")
        table = latency_table if isinstance(latency_table, LatencyTable) else LatencyTable.read(latency_table)
        kept, search = search_latency(scores, budget=budget, table=table, heads_per_layer=heads, neurons_per_layer=neurons)
        achieved = flops.encoder_macs(kept.counts("head"), kept.counts("neuron"), seq_len, hidden, head_dim)
        search.update({"base_macs": base, "achieved_macs": achieved, "achieved_ratio": achieved / base})
    else:
        kept, search = search_mac(scores, budget=budget, head_cost=flops.head_macs(seq_len, hidden, head_dim),
                                  neuron_cost=flops.neuron_macs(seq_len, hidden), base_macs=base, heads_per_layer=heads,
                                  neurons_per_layer=neurons)
    return kept, {**search, "mac_seq_len": seq_len}
