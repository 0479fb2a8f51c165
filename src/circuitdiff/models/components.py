"""Canonical component names shared by every architecture: ``L3.H7`` (head) and ``L3.MLP``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^L(\d+)\.(?:H(\d+)|MLP)$")


@dataclass(frozen=True, order=True)
class Component:
    """One attention head (``head`` set) or one MLP (``head`` None) of one layer, 0-based."""

    layer: int
    head: int | None = None

    @property
    def kind(self) -> str:
        return "mlp" if self.head is None else "head"

    @property
    def name(self) -> str:
        return f"L{self.layer}.MLP" if self.head is None else f"L{self.layer}.H{self.head}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str) -> Component:
        match = _NAME.match(name)
        if match is None:
            raise ValueError(f"not a component name: {name!r} (expected e.g. 'L3.H7' or 'L3.MLP')")
        head = match.group(2)
        return cls(int(match.group(1)), None if head is None else int(head))


def all_components(n_layers: int, n_heads: int) -> list[Component]:
    """Every head of every layer, then that layer's MLP, in layer order."""
    out: list[Component] = []
    for layer in range(n_layers):
        out.extend(Component(layer, h) for h in range(n_heads))
        out.append(Component(layer))
    return out
