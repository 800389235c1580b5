"""Dataset readers. The root holds what text and image data share and stays import-light."""

from __future__ import annotations

import numpy as np


def disjoint_draws(pool_size: int, n: int, seed: int, draws: int) -> list[list[int]]:
    """``draws`` disjoint seeded batches of ``n`` positions in a calibration pool of ``pool_size``."""
    if n < 1:
        raise ValueError(f"calibration size must be >= 1, got {n}")
    if n * draws > pool_size:
        raise ValueError(f"{draws} calibration batch(es) of {n} need {n * draws} rows; the pool has {pool_size}")
    order = np.random.default_rng(seed).permutation(pool_size)
    return [order[i * n : (i + 1) * n].tolist() for i in range(draws)]
