"""Activation memory estimates from liveness and known shapes."""

from __future__ import annotations

from typing import Mapping, Optional

from ..ir import Graph
from .arena import value_nbytes
from .liveness import Liveness


def peak_activation_bytes(graph: Graph, live: Liveness, dims: Mapping[str, int]) -> Optional[int]:
    """Most bytes of activations alive at once when buffers are freed after last use;
    None when a shape is not known at build time."""
    size: dict[str, int] = {}
    for v in graph.inputs:
        b = value_nbytes(v.type, dims)
        if b is None:
            return None
        size[v.name] = b
    current = sum(size.values())
    peak = current
    for i, node in enumerate(graph.nodes):
        for v in node.outputs:
            b = value_nbytes(v.type, dims)
            if b is None:
                return None
            size[v.name] = b
            current += b
        peak = max(peak, current)
        for name in live.release_after[i]:
            current -= size.get(name, 0)
    return peak
