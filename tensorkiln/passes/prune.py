"""Drop graph inputs and initializers that nothing reads.

As TensorRT does, an input no layer reads (often after folding or dead-code removal made
it irrelevant) is removed from the engine's inputs, with a warning in the build report:
callers then no longer pass it.
"""

from __future__ import annotations

from ..ir import Graph
from .context import PassContext
from .noops import read_names


def prune_unused_inputs(graph: Graph, ctx: PassContext) -> Graph:
    read = read_names(graph)
    kept_inputs = []
    for v in graph.inputs:
        if v.name in read:
            kept_inputs.append(v)
        else:
            ctx.rewrote("unused_input", v.name, f"input '{v.name}' is never read; removed from the engine's inputs (a value given for it is ignored)")
    kept_constants = []
    for v in graph.initializers:
        if v.name in read:
            kept_constants.append(v)
        else:
            ctx.rewrote("unused_initializer", v.name)
    graph.inputs = kept_inputs
    graph.initializers = kept_constants
    return graph
