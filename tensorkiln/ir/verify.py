"""Structural checks on a Graph; a failure names the offending node."""

from __future__ import annotations

from typing import Callable, Optional

from ..errors import GraphError
from .graph import Graph, Node


def verify(graph: Graph, outer_names: frozenset[str] = frozenset(),
           check_node: Optional[Callable[[Node], Optional[str]]] = None) -> None:
    """Raise GraphError if the graph is not a valid topologically ordered SSA graph.

    ``outer_names`` are values visible from an enclosing graph (for subgraphs);
    ``check_node`` may return a reason a node is invalid (e.g. unknown op).
    """
    seen: set[str] = set(outer_names)
    where = f"graph '{graph.name}'"
    for v in list(graph.inputs) + list(graph.initializers):
        if v.name in seen and v.name not in outer_names:
            raise GraphError(f"{where}: value '{v.name}' is defined twice")
        seen.add(v.name)
    for v in graph.initializers:
        if v.const is None:
            raise GraphError(f"{where}: initializer '{v.name}' has no data")
    for idx, node in enumerate(graph.nodes):
        label = f"{where}: node '{node.name or '#' + str(idx)}' ({node.op_type})"
        for i, v in enumerate(node.inputs):
            if v is not None and v.name not in seen:
                raise GraphError(f"{label}: input {i} '{v.name}' is not defined before use")
        for sub in node.subgraphs():
            verify(sub, frozenset(seen), check_node)
        for v in node.outputs:
            if v.name in seen:
                raise GraphError(f"{label}: output '{v.name}' is already defined")
            seen.add(v.name)
        if check_node is not None:
            reason = check_node(node)
            if reason:
                raise GraphError(f"{label}: {reason}")
    for v in graph.outputs:
        if v.name not in seen:
            raise GraphError(f"{where}: output '{v.name}' is never produced")
