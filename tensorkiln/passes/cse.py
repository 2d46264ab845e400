"""Common-subexpression elimination: compute each distinct expression once.

First, constants with the same dtype, shape and bytes become one (exporters often
duplicate a weight, a shape vector or a scalar per use). Then nodes are visited in
order; a node with the same op, domain, opset, attributes and input values as an earlier
one is dropped and its readers read the earlier node's outputs. Since the scan runs in
topological order and merged readers see the same inputs, whole duplicated chains
collapse in one sweep.

Random ops never merge (two draws are two tensors), nor do nodes with subgraphs (their
bodies are compared by identity only, and copies are never identical objects). Only the
top-level graph is processed.
"""

from __future__ import annotations

import hashlib
from typing import Any, Hashable, Optional

import numpy as np

from ..ir import Graph, NameScope, Node, TensorType, Value
from ..ops import get_op
from .context import PassContext
from .noops import all_names, substitute

# Larger constants are not compared byte by byte: hashing them costs more build time
# than sharing them saves.
MAX_HASHED_CONSTANT_BYTES = 256 << 20


def eliminate_common_subexpressions(graph: Graph, ctx: PassContext) -> Graph:
    # Name -> the Value that replaces it; readers are rewired as the scan reaches them.
    mapping = _merge_constants(graph, ctx)
    output_names = {v.name for v in graph.outputs}
    names = NameScope(all_names(graph))
    first: dict[Hashable, Node] = {}
    kept: list[Node] = []
    for node in graph.nodes:
        node.inputs = [None if v is None else mapping.get(v.name, v) for v in node.inputs]
        key = _node_key(node, output_names)
        earlier = first.get(key) if key is not None else None
        if earlier is None:
            if key is not None:
                first[key] = node
            kept.append(node)
            continue
        for dup, same in zip(node.outputs, earlier.outputs):
            if dup.name in output_names:
                # The engine's output keeps its name: a copy of the earlier result.
                kept.append(Node("Identity", [same], [dup], name=names.unique(node.name), opset=node.opset or 13))
            else:
                mapping[dup.name] = same
        ctx.rewrote("common_subexpression", node.name, f"{node.op_type} same as '{earlier.name}'")
    graph.nodes = kept
    substitute(graph, mapping)  # subgraphs' captures
    return graph


def _merge_constants(graph: Graph, ctx: PassContext) -> dict[str, Value]:
    """Drop initializers equal to an earlier one; returns dropped name -> the one kept."""
    protected = {v.name for v in graph.outputs}
    # Bucket by cheap facts first; only buckets with more than one member are hashed.
    buckets: dict[tuple, list[Value]] = {}
    for v in graph.initializers:
        a = v.const
        if a.dtype == object or a.nbytes > MAX_HASHED_CONSTANT_BYTES:
            continue
        buckets.setdefault((a.dtype.str, a.dtype.name, a.shape), []).append(v)
    mapping: dict[str, Value] = {}
    for members in buckets.values():
        if len(members) < 2:
            continue
        by_digest: dict[bytes, Value] = {}
        for v in members:
            data = np.ascontiguousarray(v.const).tobytes()
            digest = hashlib.blake2b(data, digest_size=16).digest()
            kept = by_digest.get(digest)
            if kept is None:
                by_digest[digest] = v
                continue
            if v.name in protected or np.ascontiguousarray(kept.const).tobytes() != data:
                continue
            mapping[v.name] = kept
            ctx.rewrote("duplicate_constant", v.name, f"same as '{kept.name}'")
    graph.initializers = [v for v in graph.initializers if v.name not in mapping]
    return mapping


def _node_key(node: Node, output_names: set[str]) -> Optional[Hashable]:
    """What makes two nodes compute the same values, or None if the node must not merge."""
    op = get_op(node.op_type, node.domain)
    if op is None or not op.deterministic:
        return None
    if node.op_type == "Identity" and all(v.name in output_names for v in node.outputs):
        return None  # a copy kept only to give a graph output its name
    try:
        attrs = tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items()))
    except TypeError:
        return None  # an attribute we cannot compare: stay on the safe side
    inputs = tuple(None if v is None else v.name for v in node.inputs)
    return (node.op_type, node.domain, node.opset, len(node.outputs), inputs, attrs)


def _attr_key(value: Any) -> Hashable:
    # Type-tagged so 1, 1.0 and True stay different; floats by repr so -0.0 != 0.0.
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return ("ndarray", "object", value.shape, repr(value.tolist()))
        return ("ndarray", value.dtype.str, value.dtype.name, value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, Graph):
        return ("graph", id(value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_attr_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _attr_key(v)) for k, v in value.items())))
    if isinstance(value, float):
        return ("float", repr(value))
    if value is None or isinstance(value, (bool, int, str, bytes, TensorType)):
        return (type(value).__name__, value)
    raise TypeError(f"cannot compare attribute value of type {type(value).__name__}")
