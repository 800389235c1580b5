"""Wall-clock latency (CPU, or GPU with synchronisation): warm-up runs excluded, median of repeats.

Models are timed interleaved (A, B, A, B, ...) so that a slow spell of the machine hits both and
the speed-up ratio stays honest.
"""

from __future__ import annotations

import statistics
import time

import torch

from optin.engine.latency_table import LatencyTable, neuron_grid
from optin.engine.masks import Kept


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


def measure_table(adapter, inputs: dict[str, torch.Tensor], *, repeats: int, warmup: int, grid_points: int = 9,
                  conditions: dict | None = None) -> LatencyTable:
    """Time the dense model and slim models of ``adapter``'s checkpoint that keep h heads (no
    neuron) or n neurons (no head) in every layer, interleaved, and build the table."""
    heads, neurons = adapter.unit_counts("head"), adapter.unit_counts("neuron")
    if len(set(heads)) != 1 or len(set(neurons)) != 1:
        raise ValueError(f"a latency table assumes identical layers; this model has heads {heads}, neurons {neurons}")
    num_layers, num_heads, num_neurons = len(heads), heads[0], neurons[0]

    def uniform(h: int, n: int):
        return adapter.slim(Kept.of(head=[range(h)] * num_layers, neuron=[range(n)] * num_layers))

    models = {"dense": adapter.model}
    models |= {f"heads{h}": uniform(h, 0) for h in range(num_heads + 1)}
    grid = neuron_grid(num_neurons, grid_points)
    # S(0, 0) is heads0; the FFN curve shares it.
    models |= {f"neurons{n}": uniform(0, n) for n in grid if n}
    times = compare(models, inputs, repeats, warmup)
    return LatencyTable.from_timings(
        num_layers=num_layers, dense_s=times["dense"],
        heads_s={h: times[f"heads{h}"] for h in range(num_heads + 1)},
        neurons_s={n: times[f"neurons{n}" if n else "heads0"] for n in grid},
        conditions={"repeats": repeats, "warmup": warmup, "threads": torch.get_num_threads(), **(conditions or {})})
