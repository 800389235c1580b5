"""One adapter per model family: the only code that knows module names.

``adapter_for(model)`` picks the adapter registered for the model's class.
"""

from __future__ import annotations

from optin.arch.base import EncoderAdapter, Kept
from optin.arch.bert import BertAdapter
from optin.arch.cnn import CifarResNetAdapter, ConvNetAdapter, VggAdapter
from optin.arch.swin import Mask2FormerSwinAdapter
from optin.arch.vit import HfVitAdapter, TimmVitAdapter

ADAPTERS: dict[str, type[EncoderAdapter] | type[ConvNetAdapter]] = {
    adapter.family: adapter
    for adapter in (BertAdapter, HfVitAdapter, TimmVitAdapter, Mask2FormerSwinAdapter, CifarResNetAdapter, VggAdapter)
}


def adapter_for(model) -> EncoderAdapter | ConvNetAdapter:
    for adapter_cls in ADAPTERS.values():
        if adapter_cls.handles(model):
            return adapter_cls(model)
    raise TypeError(
        f"no optin adapter handles {type(model).__name__}; known families: {sorted(ADAPTERS)}"
    )


__all__ = ["ADAPTERS", "ConvNetAdapter", "EncoderAdapter", "Kept", "adapter_for"]
