"""What a mask file holds, without torch: the mask search and the tables import it cheaply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kept:
    """Indices kept per layer for each unit kind (what a mask file holds)."""

    heads: tuple[tuple[int, ...], ...]
    neurons: tuple[tuple[int, ...], ...]

    def counts(self) -> tuple[list[int], list[int]]:
        return [len(h) for h in self.heads], [len(n) for n in self.neurons]

    def to_json(self) -> dict:
        return {"head": [list(h) for h in self.heads], "neuron": [list(n) for n in self.neurons]}

    @classmethod
    def from_json(cls, data: dict) -> Kept:
        return cls(
            heads=tuple(tuple(int(i) for i in h) for h in data["head"]),
            neurons=tuple(tuple(int(i) for i in n) for n in data["neuron"]),
        )
