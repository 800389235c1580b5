"""OPTIN: one-shot, retraining-free structured pruning of pretrained transformers.

The library never imports snakemake; the workflow's rule scripts call into it.
"""

__version__ = "0.1.0"
