"""Importance scores that need no calibration forward: the baselines OPTIN is compared against.

``magnitude``: a unit's L1 weight norm. For a CNN channel, its filter norm (Li et al. 2017, "Pruning
Filters for Efficient ConvNets"), the sum of |w| over the weights that produce it; for a head or an FFN
neuron, the sum of |w| over every weight that exists only for it (``EncoderAdapter.unit_weight_norms``).
Norms are not comparable across layers (fan-in and normalisation scales differ), and Li et al. rank
within a layer; the global search ranks across layers, so each norm is divided by the mean norm of its
kind in its layer: a unit's importance is its norm relative to its layer's.

``random``: uniform importance, seeded by the run's seed, so a rerun draws the same masks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

COLUMNS = ["layer", "kind", "index", "l1_norm", "importance"]


def unit_kinds(adapter) -> list[str]:
    return [adapter.unit_kind] if hasattr(adapter, "unit_kind") else ["head", "neuron"]


def _weight_norms(adapter, kind: str) -> list[torch.Tensor]:
    return adapter.filter_norms() if kind == "channel" else adapter.unit_weight_norms(kind)


def magnitude_scores(adapter) -> pd.DataFrame:
    rows = []
    for kind in unit_kinds(adapter):
        for layer, norms in enumerate(_weight_norms(adapter, kind)):
            if not len(norms):
                continue
            relative = (norms / norms.mean().clamp_min(torch.finfo(norms.dtype).tiny)).double()
            for index, (norm, value) in enumerate(zip(norms.tolist(), relative.tolist(), strict=True)):
                rows.append({"layer": layer, "kind": kind, "index": index, "l1_norm": norm, "importance": value})
    return pd.DataFrame(rows, columns=COLUMNS)


def random_scores(adapter, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for kind in unit_kinds(adapter):
        for layer, count in enumerate(adapter.unit_counts(kind)):
            for index, value in enumerate(rng.random(count)):
                rows.append({"layer": layer, "kind": kind, "index": index, "importance": float(value)})
    return pd.DataFrame(rows, columns=["layer", "kind", "index", "importance"])


def magnitude(adapter, calibration, settings: dict, seed: int) -> pd.DataFrame:
    """The registry's scorer for weight magnitude (no calibration)."""
    return magnitude_scores(adapter)


def uniform(adapter, calibration, settings: dict, seed: int) -> pd.DataFrame:
    """The registry's scorer for random scores, seeded by the run's seed."""
    return random_scores(adapter, seed)
