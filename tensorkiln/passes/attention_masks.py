"""Keep attention masks as narrow as the scores let them broadcast.

    # SDPA(q, k, v, Where(And(pad[B, 1, 1, L], all_true[1, 1, S, 1]), 0, -inf))   mask [B, 1, S, L]
    #   -> SDPA(q, k, v, Where(pad[B, 1, 1, L], 0, -inf))                          mask [B, 1, 1, L]

Hugging Face transformers (5.x) exports BERT's padding mask this way: the padding row is
combined with a constant all-true [1, 1, S, 1] tensor (its query-side test, which always holds
for a bidirectional model) and so widened to one mask row per query before it reaches
attention. The And with all-true changes nothing but the shape, and attention broadcasts the
mask over the scores anyway; the narrow mask is S times less data, and the attention kernels
read a mask that is one row for every query once per key block instead of per query
(tactics/cuda/triton_attention.py: BERT-base at batch 64, 29.5 us -> 22 us per layer on an H200).

The rule applies when the mask is Where(cond, a, b) with scalar constants a and b, cond is
And(x, c) with c true everywhere, and the scores broadcast the narrowed mask to exactly what they
broadcast the original one to. c is true everywhere when it is such a constant, or when an engine
built for a range of sequence lengths computes it: ``GreaterOrEqual(Range(0, S), 0)`` through
Unsqueezes (the query-side test above, with S known only at run time), And-ed with such terms.
The old Where/And stay for any other reader; dead-code elimination removes them otherwise.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..ir import Graph, Node, TensorType, Value, broadcast_shapes
from .context import PassContext
from .fusion.rule import Rewriter

NARROW = "narrow_attention_masks"


# Ops whose output holds only the values of their first input.
_SAME_VALUES = frozenset({"Unsqueeze", "Squeeze", "Reshape", "Expand", "Identity", "Flatten"})


def _all_true(v: Optional[Value], producers: dict[str, Node], depth: int = 16) -> bool:
    """Whether every element of the bool value `v` is true, as a constant or by construction."""
    if v is None:
        return False
    if v.const is not None:
        return v.const.dtype == np.bool_ and bool(np.all(v.const))
    node = producers.get(v.name)
    if node is None or node.domain or depth == 0 or not node.inputs:
        return False
    if node.op_type in _SAME_VALUES:
        return _all_true(node.inputs[0], producers, depth - 1)
    if node.op_type == "And" and len(node.inputs) == 2:
        return all(_all_true(x, producers, depth - 1) for x in node.inputs)
    if node.op_type in ("GreaterOrEqual", "Greater") and len(node.inputs) == 2 and _scalar(node.inputs[1]):
        low = _lower_bound(node.inputs[0], producers, depth - 1)
        bound = np.asarray(node.inputs[1].const).reshape(-1)[0]
        return low is not None and (low >= bound if node.op_type == "GreaterOrEqual" else low > bound)
    return False


def _lower_bound(v: Optional[Value], producers: dict[str, Node], depth: int) -> Optional[float]:
    """A number no element of `v` is below, where one is known: Range with a constant start and a
    positive constant step, through ops that keep the values."""
    if v is None or depth == 0:
        return None
    if v.const is not None:
        return float(np.min(v.const)) if np.size(v.const) and v.const.dtype.kind in "iuf" else None
    node = producers.get(v.name)
    if node is None or node.domain or not node.inputs:
        return None
    if node.op_type in _SAME_VALUES:
        return _lower_bound(node.inputs[0], producers, depth - 1)
    if node.op_type == "Range" and len(node.inputs) == 3 and _scalar(node.inputs[0]) and _scalar(node.inputs[2]):
        start = float(np.asarray(node.inputs[0].const).reshape(-1)[0])
        return start if float(np.asarray(node.inputs[2].const).reshape(-1)[0]) > 0 else None
    return None


def _scalar(v: Optional[Value]) -> bool:
    return v is not None and v.const is not None and np.asarray(v.const).size == 1


def _narrowed_condition(where: Node, producers: dict[str, Node]) -> Optional[Value]:
    """x when `where` is Where(And(x, all-true), scalar, scalar) (either And operand order)."""
    if where.op_type != "Where" or where.domain or len(where.inputs) != 3:
        return None
    cond, a, b = where.inputs
    if cond is None or not (_scalar(a) and _scalar(b)):
        return None
    conj = producers.get(cond.name)
    if conj is None or conj.op_type != "And" or conj.domain or len(conj.inputs) != 2:
        return None
    x, c = conj.inputs
    if _all_true(x, producers):
        x, c = c, x
    if not _all_true(c, producers) or x is None or x.const is not None:
        return None
    return x


def narrow_attention_masks(graph: Graph, ctx: PassContext) -> Graph:
    producers = {v.name: node for node in graph.nodes for v in node.outputs if v is not None}
    rw: Optional[Rewriter] = None
    narrowed: dict[str, Value] = {}
    inserted: dict[int, Node] = {}
    for node in graph.nodes:
        if (node.domain, node.op_type) != ("tensorkiln", "ScaledDotProductAttention") or len(node.inputs) < 4:
            continue
        mask, q, k = node.inputs[3], node.inputs[0], node.inputs[1]
        if mask is None or mask.shape is None or q is None or q.shape is None or k is None or k.shape is None:
            continue
        where = producers.get(mask.name)
        x = None if where is None else _narrowed_condition(where, producers)
        if x is None or x.shape is None:
            continue
        a, b = where.inputs[1], where.inputs[2]
        narrow_shape = broadcast_shapes(tuple(x.shape), tuple(np.shape(a.const)), tuple(np.shape(b.const)))
        scores = tuple(q.shape[:-1]) + (k.shape[-2],)
        wide = broadcast_shapes(tuple(mask.shape), scores)
        if narrow_shape is None or wide is None or broadcast_shapes(narrow_shape, scores) != wide:
            continue
        if tuple(narrow_shape) == tuple(mask.shape):
            continue
        if mask.name not in narrowed:
            if rw is None:
                rw = Rewriter(graph, graph.defined_names() | {n.name for n in graph.nodes})
            out = rw.value(f"{mask.name}_narrow", TensorType(mask.dtype, tuple(narrow_shape)))
            inserted[id(where)] = rw.node("Where", [x, a, b], [out], {}, name=f"{where.name}_narrow", like=where)
            narrowed[mask.name] = out
        node.inputs[3] = narrowed[mask.name]
        ctx.rewrote(NARROW, node.name, f"mask {list(mask.shape)} -> {list(narrow_shape)}")
    if inserted:
        nodes: list[Node] = []
        for node in graph.nodes:
            nodes.append(node)
            if id(node) in inserted:
                nodes.append(inserted[id(node)])
        graph.nodes = nodes
    return graph
