"""Wall-clock latency (CPU, or GPU with synchronisation): warm-up runs excluded, median of repeats.

Models are timed interleaved (A, B, A, B, ...) so that a slow spell of the machine hits both and
the speed-up ratio stays honest.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from optin.masks import Kept


@torch.no_grad()
def compare(models: dict, inputs: dict[str, torch.Tensor], repeats: int, warmup: int) -> dict:
    # CUDA kernels run asynchronously: a timed call ends only when the GPU is done.
    on_gpu = any(v.is_cuda for v in inputs.values())
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(**inputs)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            sync()
            start = time.perf_counter()
            model(**inputs)
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# ---------------------------------------------------------------------------------------------------
# Latency lookup tables (Kwon et al.'s --mha_lut / --ffn_lut, NViT's latency table), per model,
# device, batch size, sequence length and thread count.


@dataclass(frozen=True)
class LatencyTable:
    """Predicted latency of an encoder whose layer l keeps h_l heads and n_l neurons:

        rest + sum_l attention(h_l) + sum_l ffn(n_l)

    measured on slim models of the real checkpoint with the same count in every layer, timed
    interleaved with the dense model as ``evaluate`` times (``compare``). With S(h, n) such a slim
    model's latency and D the dense model's, per layer

        attention(h) = (S(h, N) - S(0, N)) / L          h = 0..H
        ffn(n)       = (S(H, n) - S(H, 0)) / L          n on a grid 0..N, linear in between
        rest         = D - L * attention(H) - L * ffn(N)

    so the prediction for the dense counts is D itself. ``rest`` holds embeddings, classifier,
    norms and the slim code path's difference from the dense one. Noise is removed from the curves
    by making them non-decreasing from the top (each entry the minimum of itself and every larger
    count, then at least 0): the full-width entries, hence the dense prediction, stay measured."""

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
        """``heads_s[h]`` = S(h, N) for h = 0..H, ``neurons_s[n]`` = S(H, n) over the grid (0 and N included)."""
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
    out = np.minimum.accumulate(np.asarray(curve, dtype=np.float64)[::-1])[::-1]
    return [float(v) for v in np.maximum(out, 0.0)]


def neuron_grid(neurons: int, points: int) -> list[int]:
    """``points`` neuron counts from 0 to ``neurons`` (both included), evenly spaced."""
    if points < 2:
        raise ValueError(f"a neuron grid needs at least 2 points (0 and all), got {points}")
    return sorted({int(round(v)) for v in np.linspace(0, neurons, points)})


def measure_table(adapter, inputs: dict[str, torch.Tensor], *, repeats: int, warmup: int, grid_points: int = 9,
                  conditions: dict | None = None) -> LatencyTable:
    """Time the dense model and slim models of ``adapter``'s checkpoint that keep h heads (every
    neuron) or n neurons (every head) in every layer, interleaved, and build the table."""
    heads, neurons = adapter.unit_counts("head"), adapter.unit_counts("neuron")
    if len(set(heads)) != 1 or len(set(neurons)) != 1:
        raise ValueError(f"a latency table assumes identical layers; this model has heads {heads}, neurons {neurons}")
    num_layers, num_heads, num_neurons = len(heads), heads[0], neurons[0]

    def uniform(h: int, n: int):
        return adapter.slim(Kept.of(head=[range(h)] * num_layers, neuron=[range(n)] * num_layers))

    models = {"dense": adapter.model}
    models |= {f"heads{h}": uniform(h, num_neurons) for h in range(num_heads + 1)}
    grid = neuron_grid(num_neurons, grid_points)
    # S(H, N) is heads{H}; the FFN curve reuses it rather than timing the same shape twice.
    models |= {f"neurons{n}": uniform(num_heads, n) for n in grid if n != num_neurons}
    times = compare(models, inputs, repeats, warmup)
    return LatencyTable.from_timings(
        num_layers=num_layers, dense_s=times["dense"],
        heads_s={h: times[f"heads{h}"] for h in range(num_heads + 1)},
        neurons_s={n: times[f"heads{num_heads}" if n == num_neurons else f"neurons{n}"] for n in grid},
        conditions={"repeats": repeats, "warmup": warmup, "threads": torch.get_num_threads(), **(conditions or {})})
