"""Scaled dot-product attention written as primitives, recognised as one
tensorkiln::ScaledDotProductAttention layer (tensorkiln/ops/sdpa.py says why not ONNX Attention).

    MatMul(Softmax(Add(Div(MatMul(Q, Kᵀ), c), mask)), V) -> ScaledDotProductAttention(Q, K, V, mask; scale=1/c)

The scale is a Div or Mul by a scalar constant after the first MatMul, a Mul of Q and of Kᵀ
by constants before it (torch's own export of scaled_dot_product_attention), or absent
(scale 1). The mask is any float tensor added to the scores. Kᵀ is un-transposed for the
op: a Transpose producing it is replaced by one with the last two axes swapped back (none
when that is the identity); any other Kᵀ gets a Transpose of its last two axes.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np

from ....ir import Node, Value
from ..rule import Const, Match, Pat, Rewriter, Rule, Var
from .patterns import GraphLookup, float_reason, new_node, rank_of, scalar

SDPA_DOMAIN = "tensorkiln"
SDPA_OPSET = 1


def _scale(m: Match, scores_rank: int) -> Union[float, str]:
    """The factor the chain multiplies the scores by, or the reason it is not a scalar constant."""
    if "q_factor" in m.values:
        q_factor = scalar(m.value("q_factor"), scores_rank, "Q's scale")
        k_factor = scalar(m.value("k_factor"), scores_rank, "Kᵀ's scale")
        if isinstance(q_factor, str) or isinstance(k_factor, str):
            return q_factor if isinstance(q_factor, str) else k_factor
        value = q_factor * k_factor
    elif "scale" in m.values:
        c = scalar(m.value("scale"), scores_rank, "the scores' scale")
        if isinstance(c, str):
            return c
        if m.node("scaling").op_type == "Div":
            if c == 0:
                return "the scores are divided by 0"
            value = 1.0 / c
        else:
            value = c
    else:
        value = 1.0
    if not math.isfinite(value):
        return f"the scale {value} is not finite"
    return value


def _attention_reason(m: Match) -> Optional[str]:
    q, kt, v = m.value("q"), m.value("kt"), m.value("v")
    for value, what in ((q, "Q"), (kt, "Kᵀ"), (v, "V")):
        reason = float_reason(value, what)
        if reason:
            return reason
    ranks = [rank_of(q), rank_of(kt), rank_of(v)]
    if None in ranks:
        return "the ranks of Q, Kᵀ and V are not all known"
    if ranks[0] < 2 or len(set(ranks)) != 1:
        return (f"Q, Kᵀ and V have ranks {ranks}: K is not transposed as expected "
                f"(the fused layer takes Q[..., S, D], Kᵀ[..., D, L], V[..., L, Dv] of one rank)")
    if isinstance(q.shape[-1], int) and isinstance(kt.shape[-2], int) and q.shape[-1] != kt.shape[-2]:
        return f"Q's last dim {q.shape[-1]} is not Kᵀ's dim -2 {kt.shape[-2]}: K is not transposed as expected"
    softmax = m.node("softmax")
    scores = softmax.inputs[0]
    rank = rank_of(scores)
    if rank is None:
        return "the rank of the scores is unknown"
    axis = int(softmax.attrs["axis"])
    if (axis + rank if axis < 0 else axis) != rank - 1:
        return f"Softmax normalizes axis {axis} of the rank-{rank} scores, not the last (key) axis"
    if "mask" in m.values:
        mask = m.value("mask")
        if mask.dtype != q.dtype:
            got = mask.dtype.short if mask.dtype else "of unknown dtype"
            return f"the mask '{mask.name}' is {got}, not {q.dtype.short}"
        if rank_of(mask) is None:
            return f"the rank of the mask '{mask.name}' is unknown"
    scale = _scale(m, ranks[0])
    return scale if isinstance(scale, str) else None


def _untransposed_key(lookup: GraphLookup, m: Match, rw: Rewriter) -> tuple[Value, list[Node]]:
    """K[..., L, D] for the matched Kᵀ, and the Transpose node making it (if one is needed)."""
    kt = m.value("kt")
    rank = rank_of(kt)
    producer = lookup.producer(kt)
    if producer is not None and producer.op_type == "Transpose" and not producer.domain:
        source = producer.inputs[0]
        perm = producer.attrs.get("perm")
        perm = list(range(rank))[::-1] if perm is None else [int(p) for p in perm]
    else:
        source, perm = kt, list(range(rank))
    perm = perm[:-2] + [perm[-1], perm[-2]]
    if perm == list(range(rank)):
        return source, []
    key = rw.value(f"{kt.name}_key")
    return key, [new_node(rw, "Transpose", [source], [key], {"perm": perm}, like=m.node("qk"))]


def attention_rules(lookup: GraphLookup) -> list[Rule]:
    def check(m: Match) -> Optional[str]:
        if "nan_fill" in m.values and np.any(m.const("nan_fill") != 0):
            return "the NaN guard after the softmax fills with a non-zero value (the fused layer gives 0)"
        return _attention_reason(m)

    def rewrite(m: Match, rw: Rewriter) -> list[Node]:
        key, nodes = _untransposed_key(lookup, m, rw)
        inputs = [m.value("q"), key, m.value("v")]
        if "mask" in m.values:
            inputs.append(m.value("mask"))
        rw.graph.opsets.setdefault(SDPA_DOMAIN, SDPA_OPSET)
        scale = _scale(m, rank_of(m.value("q")))
        return nodes + [new_node(rw, "ScaledDotProductAttention", inputs, m.root.outputs, {"scale": scale},
                                 like=m.root, domain=SDPA_DOMAIN, opset=SDPA_OPSET)]

    qk = Pat("MatMul", [Var("q"), Var("kt")], name="qk")
    prescaled_qk = Pat("MatMul", [Pat("Mul", [Var("q"), Const("q_factor")], commutative=True),
                                  Pat("Mul", [Var("kt"), Const("k_factor")], commutative=True)], name="qk")
    scaled = [
        Pat("Div", [qk, Var("scale")], name="scaling"),
        Pat("Mul", [qk, Var("scale")], name="scaling", commutative=True),
        prescaled_qk,
        qk,
    ]
    rules = []
    for scores in scaled:
        for masked in (Pat("Add", [scores, Var("mask")], commutative=True), scores):
            probs = Pat("Softmax", [masked], name="softmax")
            # MatMul(Softmax(Add(Div(MatMul(Q, Kᵀ), c), mask)), V) -> ScaledDotProductAttention(Q, K, V, mask)
            rules.append(Rule("attention", Pat("MatMul", [probs, Var("v")]), rewrite, check))
            # The same with PyTorch's exported NaN guard: fully masked rows give 0, as the fused layer does.
            # MatMul(Where(IsNaN(P), 0, P), V) with P the softmax above -> ScaledDotProductAttention
            guarded = Pat("Where", [Pat("IsNaN", [probs]), Const("nan_fill"), probs])
            rules.append(Rule("attention", Pat("MatMul", [guarded, Var("v")]), rewrite, check))
    return rules
