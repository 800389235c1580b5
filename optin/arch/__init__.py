"""One adapter per model family: the only code that knows module names.

``adapter_for(model, family)`` picks the adapter for the model's class, importing only that
family's module: a BERT job never loads the vision, segmentation or CNN code (nor the
transformers model classes they import). Without ``family`` every module is tried in turn.
"""

from __future__ import annotations

import importlib

from optin.arch.base import EncoderAdapter, Kept

# config family -> the module whose ADAPTER_CLASSES serve it (tried in this order without a family)
FAMILY_MODULES = {
    "bert": "optin.arch.bert",
    "vit": "optin.arch.vit",  # HF ViT/DeiT/DINOv2 and timm ViTs
    "mask2former_swin": "optin.arch.swin",
    "cifar_resnet": "optin.arch.cnn",
    "vgg": "optin.arch.cnn",
}


def adapter_classes(family: str | None = None) -> list[type]:
    if family is not None and family not in FAMILY_MODULES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILY_MODULES)}")
    modules = [FAMILY_MODULES[family]] if family else list(dict.fromkeys(FAMILY_MODULES.values()))
    return [cls for name in modules for cls in importlib.import_module(name).ADAPTER_CLASSES]


def adapter_for(model, family: str | None = None):
    """The adapter of ``model``; ``family`` (the config's) limits the search to its module."""
    for adapter_cls in adapter_classes(family):
        if adapter_cls.handles(model):
            return adapter_cls(model)
    known = family or ", ".join(sorted(FAMILY_MODULES))
    raise TypeError(f"no optin adapter handles {type(model).__name__}; tried family {known}")


__all__ = ["FAMILY_MODULES", "EncoderAdapter", "Kept", "adapter_classes", "adapter_for"]
