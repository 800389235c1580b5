"""One adapter per model family: the only code that knows module names.

``adapter_for(model, family)`` picks the adapter for the model's class, importing only that
family's module (optin.arch.registry): a BERT job never loads the vision, segmentation or CNN code
(nor the model classes they import). Without ``family`` every family is tried in turn. The package
itself imports no torch, so the Snakefile and the light jobs can read the registry.
"""

from __future__ import annotations

import importlib

from optin.arch.registry import FAMILIES, Family, family
from optin.engine.masks import Kept


def adapter_classes(name: str | None = None) -> list[type]:
    families = [family(name)] if name else list(FAMILIES.values())
    modules = dict.fromkeys(f.adapter_module for f in families)  # cifar_resnet and vgg share one
    return [cls for module in modules for cls in importlib.import_module(module).ADAPTER_CLASSES]


def adapter_for(model, family: str | None = None):
    """The adapter of ``model``; ``family`` (the config's) limits the search to its module."""
    for adapter_cls in adapter_classes(family):
        if adapter_cls.handles(model):
            return adapter_cls(model)
    known = family or ", ".join(sorted(FAMILIES))
    raise TypeError(f"no optin adapter handles {type(model).__name__}; tried family {known}")


__all__ = ["FAMILIES", "Family", "Kept", "adapter_classes", "adapter_for", "family"]
