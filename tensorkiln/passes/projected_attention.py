"""Fuse each merged Q/K/V projection into the attention that reads it, where the device takes the fused layer.

A device pass: the builder runs it after precision assignment, for CUDA builds, with `accepts` from
the fused kernel's tactic (tactics/cuda/projected_attention.py), so a layer is fused only where a
kernel computes the projection and the attention together. Elsewhere the two layers stay as they are
(each with its own tuned tactics, which a fused layer would lose).
"""

from __future__ import annotations

from ..ir import Graph
from .context import PassContext
from .dead_code import eliminate_dead_nodes
from .fusion.engine import apply_rules
from .fusion.rules.patterns import GraphLookup
from .fusion.rules.projected_attention import Accepts, projected_attention_rules


def fuse_projected_attention(graph: Graph, ctx: PassContext, accepts: Accepts) -> Graph:
    """ScaledDotProductAttention(head splits of Split(FusedMatMul(x, W, b))) -> ProjectedAttention(x, W, b, mask)."""
    apply_rules(graph, projected_attention_rules(GraphLookup(graph), accepts), ctx)
    # The projection, its Split and the head-split views are left unread.
    return eliminate_dead_nodes(graph, ctx)
