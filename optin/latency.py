"""Wall-clock latency (CPU, or GPU with synchronisation): warm-up runs excluded, median of repeats.

Models are timed interleaved (A, B, A, B, ...) so that a slow spell of the machine hits both and
the speed-up ratio stays honest.
"""

from __future__ import annotations

import statistics
import time

import torch


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
