"""When each value dies, so its buffer can be released or reused."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import Graph, free_names_of_subgraphs


@dataclass(frozen=True)
class Liveness:
    # For each node index, the names of values whose last use is that node.
    release_after: tuple[tuple[str, ...], ...]
    # Values never released inside the graph (outputs, constants, captured values).
    pinned: frozenset[str]


def compute_liveness(graph: Graph) -> Liveness:
    """A value produced in the graph (or fed as an input) dies after its last reader.

    Readers include nodes whose subgraphs capture the value. Graph outputs and constants
    are pinned: outputs are returned, constants belong to the engine.
    """
    pinned = {v.name for v in graph.outputs} | {v.name for v in graph.initializers}
    local = {v.name for v in graph.inputs} | {v.name for n in graph.nodes for v in n.outputs}
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v is not None:
                last_use[v.name] = i
        for name in free_names_of_subgraphs(node):
            last_use[name] = i
    # Produced but never read: dead right after the producing node.
    for i, node in enumerate(graph.nodes):
        for v in node.outputs:
            last_use.setdefault(v.name, i)
    release: list[list[str]] = [[] for _ in graph.nodes]
    for name, i in last_use.items():
        if name in local and name not in pinned:
            release[i].append(name)
    return Liveness(tuple(tuple(sorted(r)) for r in release), frozenset(pinned))
