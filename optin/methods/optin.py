"""OPTIN, the method: per-unit (md, kl) from the engine (optin.engine.scoring) combined into one
importance as the settings say (optin.engine.settings.OptinMethod), and the whole-model scorer the
method registry names (``score``: the workflow's score_shard and merge_scores in one call)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from optin.engine.settings import OptinMethod


def dynamic_kl_scaling(md: np.ndarray, kl: np.ndarray, lambda_contribution: float) -> np.ndarray:
    """§4.2: the authors' per-unit power-of-ten KL scaling, in scoring order.

    The running list of scales is shared across the units of one pass, so the result depends on
    the order of ``md``/``kl`` (layer-major, unit-minor).
    """
    scales: list[float] = []
    scaled = np.empty_like(kl, dtype=np.float64)
    for i, (m, k) in enumerate(zip(md, kl, strict=True)):
        mean_scale = float(np.mean(scales)) if scales else 1.0
        if m > k:
            if k == 0.0:
                scale = mean_scale
            else:
                scale = 10.0 ** int(math.log10(m) - math.log10(k) - math.log10(lambda_contribution))
                scales.append(scale)
        else:
            scale = mean_scale
        scaled[i] = scale * k
    return scaled


def combine(raw: pd.DataFrame, method: OptinMethod, num_layers: int) -> pd.DataFrame:
    """Turn per-unit (md, kl) into ``importance`` (larger = more important)."""
    parts = []
    # The reference code's decays and positional weights exist for heads and neurons only.
    kinds = (("head", method.head_metric_decay), ("neuron", method.neuron_metric_decay), ("token", 1.0), ("channel", 1.0))
    for kind, decay in kinds:
        part = raw[raw["kind"] == kind].sort_values(["layer", "index"], kind="stable").copy()
        md = part["md"].to_numpy(dtype=np.float64)
        kl = part["kl"].to_numpy(dtype=np.float64)
        if method.dynamic_lambda and method.md_weight == 0.0:
            kl_term = kl  # KL only in the authors' code (loss_type KL) ranks by plain KL, not KL scaled by MD
        elif method.dynamic_lambda and method.lambda_c == 0.0:
            kl_term = np.zeros_like(kl)  # MD only: no KL term at all, scaled or not
        elif method.dynamic_lambda:
            kl_term = dynamic_kl_scaling(md, kl, method.lambda_contribution)
        else:
            kl_term = method.lambda_c * kl
        weight = np.full(len(part), decay, dtype=np.float64)
        if method.positional_weighting and kind in ("head", "neuron"):
            index = part["index"].to_numpy()
            width = int(index.max()) + 1 if len(index) else 0
            stop = 10.0 if kind == "head" else 100.0
            weight *= np.geomspace(1.0, stop, width)[::-1][index]
        if kind in ("head", "neuron"):
            weight[part["layer"].to_numpy() == num_layers - 1] *= method.final_layer_decay(kind)
        part["kl_term"] = kl_term
        part["importance"] = (method.md_weight * md + kl_term) * weight
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def write_scores(scores: pd.DataFrame, path, *, model: str, dataset: str, method: str, seed: int) -> pd.DataFrame:
    """Prefix a scores table with the run it belongs to and write it (every scoring rule's output)."""
    for position, (key, value) in enumerate((("model", model), ("dataset", dataset), ("method", method), ("seed", int(seed)))):
        scores.insert(position, key, value)
    scores.to_parquet(path, index=False)
    return scores


def score(adapter, calibration, settings, seed: int, *, chunk: int = 32, progress: bool = False) -> pd.DataFrame:
    """Every head and neuron (CNNs: channel) scored by the prefix-cache engine and combined as the
    settings say: the workflow's score_shard and merge_scores in one call, on the calibration batch
    (neurons on ``calibration.second_batch`` with ``same_batch: false``, the authors' code). Tokens
    matter only to OPTIN-tau's schedule, which the workflow scores."""
    from optin.engine.scoring import run_teacher, score_layer

    method = settings if isinstance(settings, OptinMethod) else OptinMethod.from_config(dict(settings))
    if method.tap != "default":
        adapter.tap_position = method.tap
    batches = [calibration.batch] + ([calibration.second_batch] if calibration.second_batch is not None else [])
    teachers = [run_teacher(adapter, b, include_padding=method.md_include_padding) for b in batches]
    kinds = [adapter.unit_kind] if hasattr(adapter, "unit_kind") else ["head", "neuron"]
    parts = []
    for layer in range(adapter.num_layers):
        for kind in kinds:
            teacher = teachers[0] if (method.same_batch or kind != "neuron") else teachers[-1]
            parts.append(score_layer(adapter, teacher, layer, kind, method, seed, chunk=chunk, progress=progress))
    return combine(pd.concat(parts, ignore_index=True), method, adapter.num_layers)
