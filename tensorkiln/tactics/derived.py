"""Tensors a tactic derives once from a layer's weights (a dtype, layout or memory-format
conversion), shared by the CPU and CUDA tactics."""

from __future__ import annotations

import weakref
from typing import Any, Callable, Hashable

import torch


class DerivedTensors:
    """Tensors computed once from a layer's weights (a dtype or memory-format conversion), kept
    while the weight lives.

    Keyed by the weight's storage address and layout; an entry is used only while it still
    belongs to the very same tensor object at the same version (an in-place write or a
    recycled address re-derives), and it disappears when that tensor is freed.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[weakref.ref, int, Any]] = {}

    def get(self, source: torch.Tensor, purpose: Hashable, derive: Callable[[torch.Tensor], Any]) -> Any:
        key = (source.data_ptr(), tuple(source.shape), tuple(source.stride()), source.dtype, purpose)
        entry = self._entries.get(key)
        version = source._version
        if entry is not None and entry[0]() is source and entry[1] == version:
            return entry[2]
        derived = derive(source)
        entries = self._entries

        def forget(ref: weakref.ref, key: tuple = key) -> None:
            current = entries.get(key)
            if current is not None and current[0] is ref:
                del entries[key]

        self._entries[key] = (weakref.ref(source, forget), version, derived)
        return derived

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["DerivedTensors"]
