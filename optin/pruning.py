"""The library's front door: any registered method on one model in a notebook, without the workflow.

``optin.prune(model, calibration, budget=0.5, method="kwon", labels=y)`` runs the workflow's steps in
one process, with the same code: the method's scorer from the method registry
(optin.methods.registry; OPTIN through the prefix-cache engine), the search under the family's cost
model (optin.engine.cost), the method's per-mask stages and compensation where it has them (Kwon et
al.'s rearrangement and tuning, FLAP's bias compensation), and the model physically sliced by its
family's adapter. On the same model, batch, seed and settings it gives the workflow's mask
(tests/test_tiny_pipeline.py checks it for every method of the tiny run).

What it does not do, and where to find it: OPTIN-tau's token schedule, accuracy and latency
measurement, many seeds and budgets: the workflow (config methods.<name>, prune_tokens, the
evaluate rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from optin.engine.masks import Kept
from optin.methods.registry import DEFAULT


@dataclass
class Pruned:
    """What ``optin.prune`` returns. ``model`` is the slim model (a smaller instance of the dense
    model's family, weights copied, no masks); ``search`` holds the fields of the workflow's mask
    file (budget, base_macs, achieved_macs, achieved_ratio, heads_kept, ...)."""

    model: Any
    kept: Kept
    scores: pd.DataFrame          # one row per unit: layer, kind, index, importance (+ the method's columns)
    search: dict
    family: str
    method: dict                  # every resolved setting of the method, its kind included
    # The adapter of the model the slim model was cut from: the dense model, or its copy with Kwon
    # et al.'s tuned scales or FLAP's biases folded in. slim(x) == adapter.masked_logits(x, kept).
    adapter: Any = field(repr=False)

    @property
    def macs(self) -> dict:
        """Dense and kept MACs of the prunable part under the search's cost model, and their ratio."""
        return {"dense": self.search["base_macs"], "kept": self.search["achieved_macs"],
                "ratio": self.search["achieved_ratio"]}

    def save(self, path, tokenizer=None, **spec) -> Path:
        """Save the slim model where its family's usual loader reads it back (docs/library.md):
        a text or decoder model with its tokenizer; a timm ViT with ``timm_name`` and ``timm_kwargs``."""
        self.adapter.save_slim(self.model, path, tokenizer=tokenizer, **spec)
        return Path(path)


def _batches(calibration) -> list[dict]:
    batches = [calibration] if isinstance(calibration, Mapping) else list(calibration)
    if not batches or not all(isinstance(b, Mapping) and b for b in batches):
        raise ValueError("calibration must be a batch of model inputs (a mapping such as a tokenizer's output or "
                         "{'pixel_values': tensor}) or a list of such batches")
    return [dict(b) for b in batches]


def _sequence_length(adapter, batch: dict) -> float:
    """Tokens per sample that the encoder MAC model prices: the real (unpadded) tokens of a text
    batch, every token of an image batch (the rows of its embedding: patches and prefix tokens)."""
    mask = batch.get("attention_mask")
    if mask is not None:
        return float(mask.sum()) / mask.shape[0]
    import torch

    with torch.no_grad():
        rows, layout = adapter.embed(batch)
    return rows.shape[0] / layout.n


def prune(model, calibration, *, budget: float, method=DEFAULT, family: str | None = None, seed: int = 0,
          labels=None, mac_seq_len: float | None = None, latency_table=None, chunk: int = 32, progress: bool = False,
          **settings) -> Pruned:
    """Prune ``model`` to ``budget`` of its MACs (or, with ``budget_metric="latency"``, of its latency
    predicted by ``latency_table``) with a registered method, and slice it.

    - ``calibration``: the model's inputs for a few samples on the model's device (a tokenizer's
      output, ``{"pixel_values": ...}``); for OPTIN with ``same_batch=False``, a list of two batches
      (neurons scored on the second, the authors' code).
    - ``method``: a method or variant name of the registry (``"optin"``, ``"kwon"``, ``"kwon_tuned"``,
      ``"nvit"``, ``"magnitude"``, ``"random"``, ``"flap_full"``, ``"wanda_sp"``...; ``optin.methods.
      registry.names()``) or a mapping as in config.yaml's ``methods`` (``{"kind": "optin",
      "semantics": "reference"}``); ``**settings`` override its settings (``lambda_c=0.2``).
    - ``labels``: the calibration samples' labels, for methods that need the task loss (Kwon et
      al., NViT).
    - ``family``: a registered family name (``optin.arch.FAMILIES``) to limit the adapter lookup.
    - ``seed``: the run's seed (MD's row subsets, random scores), as the workflow's calibration seed.
    - ``mac_seq_len``: tokens per sample the MAC model prices (encoders); default the calibration
      batch's mean real tokens (the workflow's default is the test split's mean).
    """
    from optin.arch import adapter_for
    from optin.arch.registry import family as family_entry
    from optin.engine.cost import cost_model
    from optin.methods.registry import Calibration, as_entry, entry_of, has_mask_stages, resolved_settings

    if not 0.0 < float(budget) <= 1.0:
        raise ValueError(f"budget must be in (0, 1] (the fraction of the dense cost kept), got {budget!r}")
    config_entry = {**as_entry(method), **settings}
    entry = entry_of(config_entry)
    resolved = resolved_settings(config_entry)
    if resolved.get("prune_tokens"):
        raise ValueError("prune_tokens (OPTIN-tau's token schedule) runs in the workflow (evaluate merges tokens); "
                         "optin.prune keeps every token")
    batches = _batches(calibration)
    separate_neuron_batch = entry.sharded and not resolved["same_batch"]
    if separate_neuron_batch and len(batches) < 2:
        raise ValueError("same_batch: false scores neurons on a second calibration batch: pass a list of two batches")
    adapter = adapter_for(model.eval(), family)
    fam = family_entry(family or _registered_family(adapter))
    unfit = entry.fit_error(fam)
    if unfit:
        raise ValueError(unfit)
    if entry.needs_labels and labels is None:
        raise ValueError(f"method kind {entry.name!r} scores by the task loss: pass labels= (one per calibration sample)")
    table = _latency_table(latency_table, resolved)
    if resolved["budget_metric"] == "latency" and fam.cost_model != "encoder":
        raise ValueError(f"a latency budget needs a latency table of identical layers; family {fam.name!r} "
                         f"prices units by {fam.cost_model!r}")
    calib = Calibration(batch=batches[0], labels=labels, latency_table=table,
                        second_batch=batches[1] if separate_neuron_batch else None)
    if entry.sharded:
        scores = entry.function()(adapter, calib, resolved, seed, chunk=chunk, progress=progress)
    else:
        scores = entry.function()(adapter, calib if entry.needs_calibration else None, resolved, seed)
    seq_len = None
    if fam.cost_model == "encoder":
        seq_len = float(mac_seq_len) if mac_seq_len is not None else _sequence_length(adapter, batches[0])
    costs = cost_model(fam.cost_model).from_adapter(adapter, batches[0], seq_len=seq_len, latency_table=table)
    kept, search = costs.search(scores, float(budget), resolved, score_scale=entry.score_scale, seed=seed)
    slim_adapter = adapter
    if has_mask_stages(config_entry):
        from optin.arch.base import pruned_encoder
        from optin.engine.scoring import run_teacher

        # real tokens only, as the workflow's tune_mask reads its calibration teacher
        teacher = run_teacher(adapter, batches[0], include_padding=False)
        kept, extra = entry.function(entry.mask_stages)(adapter, teacher, labels, kept, resolved)
        search.update(extra)
        slim_adapter, _ = pruned_encoder(adapter.model, {"kept": kept.to_json(), **extra}, fam.name)
    if "removed_channel_means" in search:  # FLAP's bias compensation: the slim model carries the biases
        from optin.methods.llm_peers import output_biases, with_output_biases

        compensated = with_output_biases(adapter.model, output_biases(adapter, search["removed_channel_means"]))
        slim_adapter = adapter_for(compensated, fam.name)
    search["kept"] = kept.to_json()
    return Pruned(model=slim_adapter.slim(kept), kept=kept, scores=scores, search=search, family=fam.name,
                  method={"kind": entry.name, **resolved}, adapter=slim_adapter)


def _latency_table(latency_table, settings: dict):
    if latency_table is None:
        if settings["budget_metric"] == "latency" or settings.get("latency_eta"):
            raise ValueError("budget_metric: latency (and NViT's latency_eta) needs latency_table (a LatencyTable or the "
                             "path of the workflow's results/latency/<model>/<dataset>/<device>.json)")
        return None
    from optin.engine.latency_table import LatencyTable

    return latency_table if isinstance(latency_table, LatencyTable) else LatencyTable.read(latency_table)


def _registered_family(adapter) -> str:
    """The registry name of an adapter's family (a timm ViT's adapter belongs to family vit)."""
    from optin.arch.registry import FAMILIES

    if adapter.family in FAMILIES:
        return adapter.family
    return next(name for name, entry in FAMILIES.items() if entry.adapter_module == type(adapter).__module__)
