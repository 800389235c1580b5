"""Latency lookup tables (Kwon et al.'s --mha_lut / --ffn_lut, NViT's latency table), per model,
device, batch size, sequence length and thread count: what the latency-budgeted search
(optin.engine.search.search_latency) and every evaluation's predicted speed-up read. Measured by
optin.engine.latency.measure_table; kept free of torch so that the mask search stays a light job."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LatencyTable:
    """Predicted latency of an encoder whose layer l keeps h_l heads and n_l neurons:

        rest + sum_l attention(h_l) + sum_l ffn(n_l)

    measured on slim models of the real checkpoint with the same count in every layer, timed
    interleaved with the dense model as ``evaluate`` times (``compare``). With S(h, n) such a slim
    model's latency and D the dense model's, per layer

        attention(h) = (S(h, 0) - S(0, 0)) / L          h = 0..H
        ffn(n)       = (S(0, n) - S(0, 0)) / L          n on a grid 0..N, linear in between
        rest         = D - L * attention(H) - L * ffn(N)

    so the prediction for the dense counts is D itself. Each curve is timed with the other kind
    removed, so that it is a large part of what is timed (on MiniLM the attention is ~15 % of the
    dense latency and drowned in the machine's noise otherwise); layers are additive, so nothing is
    lost. ``rest`` holds embeddings, classifier, norms and the slim code path's difference from the
    dense model's. Noise is removed from each curve by isotonic regression (non-decreasing in the
    units kept, least squares; entry 0 stays 0), before ``rest`` is computed."""

    num_layers: int
    attention_s: tuple[float, ...]      # index h = heads kept in a layer
    neuron_grid: tuple[int, ...]        # neuron counts measured, 0 and N included
    ffn_s: tuple[float, ...]            # one per neuron_grid entry
    rest_s: float
    dense_s: float
    conditions: dict = field(default_factory=dict)   # device, batch size, sequence, threads, repeats
    measured: dict = field(default_factory=dict)     # raw medians per timed model, for the record

    @property
    def heads(self) -> int:
        return len(self.attention_s) - 1

    @property
    def neurons(self) -> int:
        return self.neuron_grid[-1]

    def attention(self, heads: int) -> float:
        return self.attention_s[heads]

    def ffn(self, neurons: float) -> float:
        return float(np.interp(neurons, self.neuron_grid, self.ffn_s))

    def predict(self, heads_per_layer, neurons_per_layer) -> float:
        if len(heads_per_layer) != self.num_layers or len(neurons_per_layer) != self.num_layers:
            raise ValueError(f"the table is for {self.num_layers} layers; got {len(heads_per_layer)} head and "
                             f"{len(neurons_per_layer)} neuron counts")
        return self.rest_s + sum(self.attention(h) for h in heads_per_layer) + sum(self.ffn(n) for n in neurons_per_layer)

    def step_costs(self, kind: str, count: int) -> np.ndarray:
        """Latency added by the k-th unit of ``kind`` kept in one layer, k = 1..count."""
        curve = [self.attention(k) for k in range(count + 1)] if kind == "head" else [self.ffn(k) for k in range(count + 1)]
        return np.diff(np.asarray(curve, dtype=np.float64))

    @classmethod
    def from_timings(cls, *, num_layers: int, dense_s: float, heads_s: dict[int, float], neurons_s: dict[int, float],
                     conditions: dict | None = None) -> LatencyTable:
        """``heads_s[h]`` = S(h, 0) for h = 0..H, ``neurons_s[n]`` = S(0, n) over the grid (0 and N
        included); the two share S(0, 0)."""
        heads, grid = sorted(heads_s), sorted(neurons_s)
        if heads != list(range(len(heads))) or grid[0] != 0:
            raise ValueError(f"need every head count from 0 and neuron counts from 0; got heads {heads}, neurons {grid}")
        attention = _monotone([(heads_s[h] - heads_s[0]) / num_layers for h in heads])
        ffn = _monotone([(neurons_s[n] - neurons_s[0]) / num_layers for n in grid])
        rest = dense_s - num_layers * (attention[-1] + ffn[-1])
        measured = {"dense": dense_s, **{f"heads{h}": heads_s[h] for h in heads}, **{f"neurons{n}": neurons_s[n] for n in grid}}
        return cls(num_layers=num_layers, attention_s=tuple(attention), neuron_grid=tuple(grid), ffn_s=tuple(ffn),
                   rest_s=rest, dense_s=dense_s, conditions=dict(conditions or {}), measured=measured)

    def to_json(self) -> dict:
        return {"num_layers": self.num_layers, "attention_s": list(self.attention_s), "neuron_grid": list(self.neuron_grid),
                "ffn_s": list(self.ffn_s), "rest_s": self.rest_s, "dense_s": self.dense_s, "conditions": self.conditions,
                "measured": self.measured}

    @classmethod
    def from_json(cls, data: dict) -> LatencyTable:
        return cls(num_layers=data["num_layers"], attention_s=tuple(data["attention_s"]), neuron_grid=tuple(data["neuron_grid"]),
                   ffn_s=tuple(data["ffn_s"]), rest_s=data["rest_s"], dense_s=data["dense_s"],
                   conditions=data.get("conditions", {}), measured=data.get("measured", {}))

    @classmethod
    def read(cls, path) -> LatencyTable:
        return cls.from_json(json.loads(Path(path).read_text()))


def _monotone(curve: list[float]) -> list[float]:
    """Least-squares non-decreasing fit (pool adjacent violators), entry 0 held at its value (0),
    then at least 0."""
    blocks: list[list[float]] = []  # [mean, weight]
    for value in curve[1:]:
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, w1), (m2, w2) = blocks[-2], blocks[-1]
            blocks[-2:] = [[(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2]]
    fitted = [float(curve[0])] + [m for m, w in blocks for _ in range(int(w))]
    return [max(v, 0.0) for v in np.maximum.accumulate(fitted)]


def neuron_grid(neurons: int, points: int) -> list[int]:
    """``points`` neuron counts from 0 to ``neurons`` (both included), evenly spaced."""
    if points < 2:
        raise ValueError(f"a neuron grid needs at least 2 points (0 and all), got {points}")
    return sorted({int(round(v)) for v in np.linspace(0, neurons, points)})
