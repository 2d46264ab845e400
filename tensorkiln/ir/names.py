"""Unique names for values and nodes created by the importer, the network API and passes."""

from __future__ import annotations

from typing import Iterable


class NameScope:
    """Hands out names not yet taken: `base`, then `base_1`, `base_2`, ..."""

    def __init__(self, taken: Iterable[str] = ()):
        self.taken = set(taken)

    def __contains__(self, name: str) -> bool:
        return name in self.taken

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.taken:
            name = f"{base}_{i}"
            i += 1
        self.taken.add(name)
        return name
