"""What a mask file holds, without torch: the mask search and the tables import it cheaply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kept:
    """Indices kept per layer for each unit kind, the mask file's ``kept``: an encoder's
    {"head": ..., "neuron": ...}, a CNN's {"channel": ...}; every family's slim() and kept_masks()
    take one. Tokens are not here: a token schedule removes counts, not indices."""

    units: dict[str, tuple[tuple[int, ...], ...]]

    @classmethod
    def of(cls, **per_kind) -> Kept:
        """``Kept.of(head=[[0, 2], []], neuron=[[1], [3, 4]])``."""
        return cls({kind: tuple(tuple(int(i) for i in layer) for layer in layers) for kind, layers in per_kind.items()})

    def __getitem__(self, kind: str) -> tuple[tuple[int, ...], ...]:
        if kind not in self.units:
            raise KeyError(f"this selection keeps no {kind!r} units; it has {sorted(self.units)}")
        return self.units[kind]

    def counts(self, kind: str) -> list[int]:
        return [len(layer) for layer in self[kind]]

    def to_json(self) -> dict:
        return {kind: [list(layer) for layer in layers] for kind, layers in self.units.items()}

    @classmethod
    def from_json(cls, data: dict) -> Kept:
        if not isinstance(data, dict) or not data:
            raise ValueError(f"a mask file's 'kept' must map unit kinds to per-layer index lists, got {data!r:.80}")
        for kind, layers in data.items():
            if not isinstance(layers, list) or not all(isinstance(layer, list) for layer in layers):
                raise ValueError(f"kept.{kind}: expected a list of per-layer index lists, got {layers!r:.80}")
        return cls.of(**data)
