"""Remove nodes none of whose outputs reach a graph output."""

from __future__ import annotations

from ..ir import Graph, free_names_of_subgraphs


def eliminate_dead_nodes(graph: Graph) -> Graph:
    needed = {v.name for v in graph.outputs}
    kept = []
    for node in reversed(graph.nodes):
        if any(v.name in needed for v in node.outputs):
            kept.append(node)
            needed.update(v.name for v in node.inputs if v is not None)
            needed.update(free_names_of_subgraphs(node))
    kept.reverse()
    initializers = [v for v in graph.initializers if v.name in needed]
    return _replace(graph, nodes=kept, initializers=initializers)


def _replace(graph: Graph, **changes) -> Graph:
    fields = dict(name=graph.name, inputs=graph.inputs, outputs=graph.outputs, nodes=graph.nodes,
                  initializers=graph.initializers, opsets=graph.opsets, doc=graph.doc)
    fields.update(changes)
    return Graph(**fields)
