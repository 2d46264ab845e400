"""Remove nodes none of whose outputs reach a graph output, and unused constants."""

from __future__ import annotations

from ..ir import Graph, free_names_of_subgraphs
from .context import PassContext


def eliminate_dead_nodes(graph: Graph, ctx: PassContext) -> Graph:
    needed = {v.name for v in graph.outputs}
    kept = []
    for node in reversed(graph.nodes):
        if any(v.name in needed for v in node.outputs):
            kept.append(node)
            needed.update(v.name for v in node.inputs if v is not None)
            needed.update(free_names_of_subgraphs(node))
        else:
            ctx.rewrote("dead_node", node.name)
    kept.reverse()
    initializers = [v for v in graph.initializers if v.name in needed]
    for v in graph.initializers:
        if v.name not in needed:
            ctx.rewrote("unused_constant", v.name)
    graph.nodes = kept
    graph.initializers = initializers
    return graph
