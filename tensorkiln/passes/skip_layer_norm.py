"""Fuse each residual Add into the LayerNormalization that reads it (tensorkiln::SkipLayerNormalization).

Runs after `recognize_patterns` (which makes LayerNormalization layers out of exporters' primitive
chains) and before `fold_scale_and_bias` / `fuse_epilogues`: the epilogue rules would otherwise
fold the residual Add of Add(Add(MatMul(h, W), bias), residual) into the FusedMatMul as well as the
bias. The residual belongs here (the norm reads the sum anyway), the bias in the GEMM epilogue.

The rule leaves the Add it fused in place (see rules/skip_layer_norm.py); this pass then removes it:
when the fused layer also gives the sum, the fused layer takes the Add's place in the node order,
since readers of the sum may come before the LayerNorm; otherwise the Add is simply left unread.
"""

from __future__ import annotations

from ..ir import Graph, Node
from ..ops.fused_conv import DOMAIN
from .context import PassContext
from .fusion.engine import apply_rules
from .fusion.rules.patterns import GraphLookup
from .fusion.rules.skip_layer_norm import skip_layer_norm_rules
from .noops import read_names


def fuse_skip_layer_norms(graph: Graph, ctx: PassContext) -> Graph:
    """LayerNormalization(Add(x, skip), gamma, beta) -> tensorkiln::SkipLayerNormalization(x, skip, gamma, beta)."""
    read_before = read_names(graph)
    apply_rules(graph, skip_layer_norm_rules(GraphLookup(graph)), ctx)
    _retire_fused_adds(graph, read_before, ctx)
    return graph


def _is_skip_layer_norm(node: Node) -> bool:
    return node.op_type == "SkipLayerNormalization" and node.domain == DOMAIN


def _retire_fused_adds(graph: Graph, read_before: set[str], ctx: PassContext) -> None:
    """Replace each Add whose sum a SkipLayerNormalization now gives by that layer; drop each Add
    the fusion left unread."""
    gives_sum = {n.outputs[1].name: n for n in graph.nodes if _is_skip_layer_norm(n) and len(n.outputs) > 1}
    read = read_names(graph)
    taking_place: dict[int, Node] = {}
    for n in graph.nodes:
        if n.op_type != "Add" or n.domain:
            continue
        name = n.outputs[0].name
        if name in gives_sum:
            taking_place[id(n)] = gives_sum[name]
        elif name in read_before and name not in read:
            taking_place[id(n)] = None
    if not taking_place:
        return
    moved = {id(n) for n in taking_place.values() if n is not None}
    nodes = []
    for n in graph.nodes:
        if id(n) in taking_place:
            replacement = taking_place[id(n)]
            if replacement is not None:
                nodes.append(replacement)
            ctx.rewrote("fused_add_removed", n.name, "its sum is computed by the SkipLayerNormalization")
        elif id(n) not in moved:
            nodes.append(n)
    graph.nodes = nodes
