"""Activation memory estimates from liveness and known shapes."""

from __future__ import annotations

from typing import Mapping, Optional

from ..ir import Graph, TensorType
from .liveness import Liveness


def _nbytes(value_type, dims: Mapping[str, int]) -> Optional[int]:
    if not isinstance(value_type, TensorType) or value_type.shape is None:
        return None
    n = 1
    for d in value_type.shape:
        if isinstance(d, str):
            d = dims.get(d)
        if not isinstance(d, int):
            return None
        n *= d
    try:
        return n * value_type.dtype.itemsize
    except TypeError:
        return None


def peak_activation_bytes(graph: Graph, live: Liveness, dims: Mapping[str, int]) -> Optional[int]:
    """Most bytes of activations alive at once when buffers are freed after last use;
    None when a shape is not known at build time."""
    size: dict[str, int] = {}
    for v in graph.inputs:
        b = _nbytes(v.type, dims)
        if b is None:
            return None
        size[v.name] = b
    current = sum(size.values())
    peak = current
    for i, node in enumerate(graph.nodes):
        for v in node.outputs:
            b = _nbytes(v.type, dims)
            if b is None:
                return None
            size[v.name] = b
            current += b
        peak = max(peak, current)
        for name in live.release_after[i]:
            current -= size.get(name, 0)
    return peak
