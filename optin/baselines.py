"""Importance scores that need no calibration forward: the baselines OPTIN is compared against.

``magnitude``: a channel's L1 filter norm (Li et al. 2017, "Pruning Filters for Efficient ConvNets"),
the sum of |w| over the weights that produce it. Norms are not comparable across layers (fan-in and
BatchNorm scales differ), and Li et al. rank within a layer; the global search here ranks across
layers, so each norm is divided by its layer's mean: a channel's importance is its norm relative to
its layer's.
"""

from __future__ import annotations

import pandas as pd
import torch

def magnitude_scores(adapter) -> pd.DataFrame:
    rows = []
    for layer, norms in enumerate(adapter.filter_norms()):
        if not len(norms):
            continue
        relative = (norms / norms.mean().clamp_min(torch.finfo(norms.dtype).tiny)).double()
        for index, (norm, value) in enumerate(zip(norms.tolist(), relative.tolist(), strict=True)):
            rows.append({"layer": layer, "kind": adapter.unit_kind, "index": index, "l1_norm": norm, "importance": value})
    return pd.DataFrame(rows, columns=["layer", "kind", "index", "l1_norm", "importance"])
