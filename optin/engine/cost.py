"""One cost model per family: what a kept selection costs, and the budgeted search under it.

A family's registry entry names its cost model (``Family.cost_model``); the workflow's solve rule
builds it from the prepared model's ``model_info.json`` (``from_info``), ``optin.prune`` from the
model and its calibration batch (``from_adapter``), and both call ``search``: the same prices,
the same search, the same mask.

- ``encoder``: heads and neurons of one width at a sequence length (optin.engine.flops, Kwon et
  al.'s accounting); a latency budget through the model's latency table; OPTIN-tau's tokens.
- ``per_layer``: a MAC price per unit and layer (windowed attention, Swin's stages).
- ``channels``: the network's convolutions and linears recounted per kept channel count.
- ``gqa``: query heads, the KV heads they read (paid while any of their query heads is kept) and
  MLP channel groups at a stated context (decoder LLMs).

``score_scale`` is the method's (optin.methods.registry): "per_kind" scores carry no scale shared
by heads and neurons, so the search weighs them by each unit's MACs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from optin.engine import flops
from optin.engine.flops import MacOp
from optin.engine.masks import Kept
from optin.engine.search import (cost_weighted, relative_to_layer_mean, removed_channel_means, search_channels,
                                 search_latency, search_mac, search_tau, search_threshold)


@dataclass
class EncoderCost:
    heads_per_layer: list[int]
    neurons_per_layer: list[int]
    seq_len: float
    hidden: int
    head_dim: int
    max_tokens_removed: int | None = None   # images: every patch token but one may merge away
    latency_table: object = None            # an optin.engine.latency_table.LatencyTable

    @classmethod
    def from_info(cls, info: dict, *, mac_seq_len="auto", image_size=None, latency_table=None) -> EncoderCost:
        """``mac_seq_len`` "auto": a text model's mean tokenized test length, an image model's real
        token count at the dataset's image size."""
        patches = (image_size // info["patch_size"]) ** 2 if "patch_size" in info else None
        seq_len = mac_seq_len
        if seq_len == "auto":
            seq_len = info["mean_test_tokens"] if patches is None else patches + info["prefix_tokens"]
        return cls(info["heads_per_layer"], info["neurons_per_layer"], float(seq_len), info["hidden_size"], info["head_dim"],
                   max_tokens_removed=None if patches is None else patches - 1, latency_table=latency_table)

    @classmethod
    def from_adapter(cls, adapter, batch: dict, *, seq_len: float, latency_table=None) -> EncoderCost:
        return cls(adapter.unit_counts("head"), adapter.unit_counts("neuron"), float(seq_len), adapter.hidden_size,
                   adapter.head_dim, latency_table=latency_table)

    @property
    def head_macs(self) -> float:
        return flops.head_macs(self.seq_len, self.hidden, self.head_dim)

    @property
    def neuron_macs(self) -> float:
        return flops.neuron_macs(self.seq_len, self.hidden)

    def macs(self, heads_per_layer, neurons_per_layer) -> float:
        return flops.encoder_macs(heads_per_layer, neurons_per_layer, self.seq_len, self.hidden, self.head_dim)

    def search(self, scores: pd.DataFrame, budget: float, settings: dict, *, score_scale: str, seed: int = 0) -> tuple[Kept, dict]:
        heads, neurons = self.heads_per_layer, self.neurons_per_layer
        if score_scale == "per_kind":
            scores = cost_weighted(scores, self.head_macs, self.neuron_macs)
        if settings.get("prune_tokens", False):
            low, high = settings["tau_head_neuron_share"]
            # The authors draw the share at random; here it is seeded by (seed, budget), and recorded.
            rng = np.random.default_rng([seed, int(round(budget * 1000))])
            kept, removed, result = search_tau(
                scores, budget=budget, head_neuron_share=float(rng.uniform(low, high)), seq_len=self.seq_len,
                hidden=self.hidden, head_dim=self.head_dim, heads_per_layer=heads, neurons_per_layer=neurons,
                max_removed=self.max_tokens_removed, uniform=settings.get("token_schedule") == "uniform")
            result["token_merges"] = [removed[0]] + [b - a for a, b in zip(removed, removed[1:])]
        elif settings.get("budget_metric") == "latency":
            if self.latency_table is None:
                raise ValueError("budget_metric: latency needs the model's latency table (optin.engine.latency_table)")
            kept, result = search_latency(scores, budget=budget, table=self.latency_table, heads_per_layer=heads,
                                          neurons_per_layer=neurons)
            # The MACs of the mask found, which evaluate recounts from the slim model's weights.
            base, achieved = self.macs(heads, neurons), self.macs(kept.counts("head"), kept.counts("neuron"))
            result.update({"base_macs": base, "achieved_macs": achieved, "achieved_ratio": achieved / base, "token_merges": None})
        else:
            kept, result = search_mac(scores, budget=budget, head_cost=self.head_macs, neuron_cost=self.neuron_macs,
                                      base_macs=self.macs(heads, neurons), heads_per_layer=heads, neurons_per_layer=neurons)
            result["token_merges"] = None
        result.update({"mac_seq_len": self.seq_len, "head_macs": self.head_macs, "neuron_macs": self.neuron_macs})
        return kept, result


@dataclass
class PerLayerCost:
    heads_per_layer: list[int]
    neurons_per_layer: list[int]
    head_cost: list[float]
    neuron_cost: list[float]
    input_size: object = None

    @classmethod
    def from_info(cls, info: dict, **_) -> PerLayerCost:
        return cls(info["heads_per_layer"], info["neurons_per_layer"], info["head_macs_per_layer"],
                   info["neuron_macs_per_layer"], info.get("input_size"))

    @classmethod
    def from_adapter(cls, adapter, batch: dict, **_) -> PerLayerCost:
        head_cost, neuron_cost = adapter.unit_macs(adapter.patch_grid(tuple(batch["pixel_values"].shape[-2:])))
        return cls(adapter.unit_counts("head"), adapter.unit_counts("neuron"), head_cost, neuron_cost,
                   list(batch["pixel_values"].shape[-2:]))

    def search(self, scores: pd.DataFrame, budget: float, settings: dict, *, score_scale: str, seed: int = 0) -> tuple[Kept, dict]:
        heads, neurons, head_cost, neuron_cost = self.heads_per_layer, self.neurons_per_layer, self.head_cost, self.neuron_cost
        base = sum(h * c for h, c in zip(heads, head_cost, strict=True)) + sum(n * c for n, c in zip(neurons, neuron_cost, strict=True))
        if score_scale == "per_kind":
            scores = cost_weighted(scores, head_cost, neuron_cost)
        kept, result = search_mac(scores, budget=budget, head_cost=head_cost, neuron_cost=neuron_cost, base_macs=base,
                                  heads_per_layer=heads, neurons_per_layer=neurons)
        result.update({"token_merges": None, "input_size": self.input_size, "head_macs_per_layer": head_cost,
                       "neuron_macs_per_layer": neuron_cost})
        return kept, result


@dataclass
class ChannelCost:
    ops: list[MacOp]
    channels_per_layer: list[int]
    min_per_layer: list[int]
    input_size: int

    @classmethod
    def from_info(cls, info: dict, **_) -> ChannelCost:
        return cls([MacOp(**op) for op in info["mac_ops"]], info["channels_per_layer"], info["min_channels_per_layer"],
                   info["input_size"])

    @classmethod
    def from_adapter(cls, adapter, batch: dict, **_) -> ChannelCost:
        size = batch["pixel_values"].shape[-1]
        return cls(adapter.mac_ops(size), adapter.unit_counts(), adapter.min_channels(), size)

    def search(self, scores: pd.DataFrame, budget: float, settings: dict, *, score_scale: str, seed: int = 0) -> tuple[Kept, dict]:
        # Whole-network MACs, exact for the kept counts; per_mac ranking prices every score by its channel's MACs.
        kept, result = search_channels(scores, budget=budget, ops=self.ops, channels_per_layer=self.channels_per_layer,
                                       min_per_layer=self.min_per_layer, ranking=settings.get("channel_ranking", "per_mac"))
        result["input_size"] = self.input_size
        return kept, result


@dataclass
class GQACost:
    num_layers: int
    heads: int
    kv_heads: int
    groups: int                 # MLP channel groups per layer
    head_dim: int
    channel_group: int
    context: int
    costs: dict                 # MACs of a query head, a KV head and a channel group (flops.llm_unit_macs)

    @classmethod
    def from_info(cls, info: dict, *, mac_context: int, **_) -> GQACost:
        costs = flops.llm_unit_macs(info["hidden_size"], info["head_dim"], mac_context, info["channel_group"])
        return cls(info["num_layers"], info["heads"], info["kv_heads"], info["intermediate_size"] // info["channel_group"],
                   info["head_dim"], info["channel_group"], mac_context, costs)

    @classmethod
    def from_adapter(cls, adapter, batch: dict, **_) -> GQACost:
        group, context = adapter.neuron_group, batch["input_ids"].shape[1]
        return cls(adapter.num_layers, adapter.heads, adapter.kv_heads, adapter.intermediate_size // group, adapter.head_dim,
                   group, context, flops.llm_unit_macs(adapter.hidden_size, adapter.head_dim, context, group))

    def search(self, scores: pd.DataFrame, budget: float, settings: dict, *, score_scale: str, seed: int = 0) -> tuple[Kept, dict]:
        head, kv, neuron = self.costs["head"], self.costs["kv"], self.costs["neuron"]
        gqa_group = self.heads // self.kv_heads
        heads, groups = [self.heads] * self.num_layers, [self.groups] * self.num_layers
        base = self.num_layers * (self.heads * head + self.kv_heads * kv + self.groups * neuron)
        common = dict(budget=budget, base_macs=base, heads_per_layer=heads, neurons_per_layer=groups)
        if settings.get("structure") == "adaptive":
            kept, result = search_threshold(scores, head_cost=head, kv_cost=kv, group_size=gqa_group, neuron_cost=neuron,
                                            by="standardized", **common)
            search = "FLAP's own structure (AL-AM): one ranking of standardized scores, kept from the top within the budget"
        else:
            if score_scale == "per_kind":
                # no loss scale shared by heads and channels: relative to the layer's mean, weighed by MACs
                scores = cost_weighted(relative_to_layer_mean(scores), head, neuron)
            kept, result = search_mac(scores, head_cost=head, neuron_cost=neuron, kv_heads=(kv, gqa_group), **common)
            search = "common global search (optin.engine.search.search_mac with KV heads)"
        if settings.get("bias_compensation"):
            result["removed_channel_means"] = removed_channel_means(scores, kept, self.head_dim, self.channel_group)
            search += ", with FLAP's bias compensation"
        result.update({"mac_context": self.context, "search": search,
                       "kv_heads_kept": sum(len({h // gqa_group for h in layer}) for layer in kept["head"]),
                       "head_macs": head, "kv_macs": kv, "neuron_macs": neuron, "channel_group": self.channel_group})
        return kept, result


COST_MODELS = {"encoder": EncoderCost, "per_layer": PerLayerCost, "channels": ChannelCost, "gqa": GQACost}


def cost_model(name: str):
    if name not in COST_MODELS:
        raise ValueError(f"unknown cost model {name!r}; known: {sorted(COST_MODELS)}")
    return COST_MODELS[name]
