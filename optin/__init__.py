"""OPTIN: one-shot, retraining-free structured pruning of pretrained transformers.

``optin.prune(model, calibration, budget=0.5)`` prunes one model in a notebook (optin.pruning);
the Snakemake workflow runs the paper's experiments. The library never imports snakemake, and
``import optin`` stays light (no torch) because the workflow reads the package while parsing.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("prune", "Pruned"):
        from optin import pruning

        return getattr(pruning, name)
    raise AttributeError(f"module 'optin' has no attribute {name!r}")


__all__ = ["Pruned", "prune"]
