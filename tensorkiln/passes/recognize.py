"""Recognise subgraphs written as primitive ops (as older exporters emit them) as single layers.

`recognize_patterns`: LayerNormalization (folding the following scale and shift), Gelu
(erf and tanh forms), Swish/SiLU, HardSwish and Softmax. `recognize_attention`: the
MatMul-softmax-MatMul chain as one tensorkiln::ScaledDotProductAttention; it needs the
Softmax layers `recognize_patterns` makes (and the exp/max nodes it leaves unread gone,
or the scores would look read twice), so it runs after it.

Both run before the epilogue fusions (`fuse_epilogues` would otherwise take the Add of
an unscaled MatMul(Q, Kᵀ) + mask as a bias, and it fuses Gelu/Swish only once they are
single ops) and before `elementwise_chains` (which would swallow the chains whole).

Patterns that are DAGs leave the nodes producing their shared value (x - mean, exp(x))
unread; each pass removes the nodes its rewrites left unread (and only those), reported as
"orphaned_node".
"""

from __future__ import annotations

from typing import Callable

from ..ir import Graph
from .context import PassContext
from .fusion.engine import apply_rules
from .fusion.rule import Rule
from .fusion.rules.attention import attention_rules
from .fusion.rules.patterns import GraphLookup, pattern_rules
from .noops import read_names


def _unread_nodes(graph: Graph) -> set[int]:
    read = read_names(graph)
    return {id(n) for n in graph.nodes if not any(v.name in read for v in n.outputs)}


def _remove_orphans(graph: Graph, unread_before: set[int], ctx: PassContext) -> None:
    """Remove the nodes that were read before the rewrites and are not any more (repeatedly:
    removing x - mean leaves ReduceMean(x) unread)."""
    while True:
        read = read_names(graph)
        orphans = [n for n in graph.nodes
                   if id(n) not in unread_before and not any(v.name in read for v in n.outputs)]
        if not orphans:
            return
        gone = {id(n) for n in orphans}
        graph.nodes = [n for n in graph.nodes if id(n) not in gone]
        for n in orphans:
            ctx.rewrote("orphaned_node", n.name, f"{n.op_type} left unread by a recognised pattern")


def _recognize(graph: Graph, ctx: PassContext, rules_for: Callable[[GraphLookup], list[Rule]]) -> Graph:
    unread_before = _unread_nodes(graph)
    read_before = read_names(graph)
    unread_constants = {v.name for v in graph.initializers if v.name not in read_before}
    apply_rules(graph, rules_for(GraphLookup(graph)), ctx)
    _remove_orphans(graph, unread_before, ctx)
    # Constants only the replaced nodes read (0.5, sqrt(2), eps, a folded gamma) would ride along in the engine.
    read = read_names(graph)
    graph.initializers = [v for v in graph.initializers if v.name in read or v.name in unread_constants]
    return graph


def recognize_patterns(graph: Graph, ctx: PassContext) -> Graph:
    """LayerNorm, GELU, SiLU/Swish, HardSwish and Softmax written as primitives -> their ONNX ops."""
    return _recognize(graph, ctx, pattern_rules)


def recognize_attention(graph: Graph, ctx: PassContext) -> Graph:
    """MatMul(Softmax(scale·MatMul(Q, Kᵀ) + mask), V) -> tensorkiln::ScaledDotProductAttention."""
    return _recognize(graph, ctx, attention_rules)


