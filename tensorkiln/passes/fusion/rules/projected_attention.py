"""A merged Q/K/V projection and the attention that reads it become one tensorkiln::ProjectedAttention layer.

    # ScaledDotProductAttention(T(R(Split(FusedMatMul(x, W, b))[0])), T(R(...[1])), T(R(...[2])), mask)
    #   -> ProjectedAttention(x, pack_heads(W, b), mask)   (T: Transpose [0, 2, 1, 3], R: Reshape to [B, S, H, D])

`merge_sibling_gemms` made the one product; the head-split Reshape/Transpose views and the attention
follow it in every BERT-style export. The Split is matched as a `Var` (the pattern engine offers
trees, and the Split feeds three branches), so the check looks it and the product up and asks that
nothing else reads them; once the attention reads x directly they are dead, and the pass drops them
(the weight and bias too: the fused layer holds them in its own per-head order).

Whether to fuse is the device's call (`accepts`): the fused layer is worth it only where a kernel
computes the projection and the attention together, and the pass runs after precision assignment,
when the builder knows the layer's dtype.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np

from ....ir import Node, TensorType, Value
from ....ops.fused_conv import DOMAIN
from ....ops.projected_attention import head_dim, pack_heads
from ..rule import Match, Pat, Rewriter, Rule, Var
from .patterns import GraphLookup, new_node

Accepts = Callable[[Node], Optional[str]]

_HEAD_SPLIT = [0, 2, 1, 3]


class _Parts:
    """What the rewrite needs of a checked match."""

    def __init__(self, product: Node, x: Value, weight: np.ndarray, bias: Optional[np.ndarray], heads: int):
        # weight and bias already in ProjectedAttention's per-head order
        self.product, self.x, self.weight, self.bias, self.heads = product, x, weight, bias, heads


def _head_split(m: Match, which: str) -> Union[tuple[Value, int, int], str]:
    """(the Split output the branch reads, heads, head dim) of one Reshape -> Transpose branch."""
    transpose, reshape = m.node(f"t{which}"), m.node(f"r{which}")
    if [int(p) for p in transpose.attrs.get("perm") or []] != _HEAD_SPLIT:
        return f"{which}'s Transpose '{transpose.name}' is not the head split {_HEAD_SPLIT}"
    src, out = reshape.inputs[0], reshape.outputs[0]
    if src.shape is None or out.shape is None or len(src.shape) != 3 or len(out.shape) != 4:
        return f"{which}'s Reshape '{reshape.name}' does not view [B, S, H*D] as [B, S, H, D]"
    heads, d = out.shape[2], out.shape[3]
    if not isinstance(heads, int) or not isinstance(d, int) or src.shape[2] != heads * d or \
            list(out.shape[:2]) != list(src.shape[:2]):
        return f"{which}'s Reshape '{reshape.name}' gives {list(out.shape)} from {list(src.shape)}"
    return src, heads, d


def _parts(lookup: GraphLookup, m: Match, accepts: Accepts) -> Union[_Parts, str]:
    branches = []
    for which in "qkv":
        branch = _head_split(m, which)
        if isinstance(branch, str):
            return branch
        branches.append(branch)
    split = lookup.producer(branches[0][0])
    if split is None or split.op_type != "Split" or split.domain or len(split.outputs) != 3:
        return f"Q '{branches[0][0].name}' does not come from a three-way Split"
    if [b[0] for b in branches] != list(split.outputs) or len({b[1:] for b in branches}) != 1:
        return f"Q, K and V are not the Split '{split.name}''s outputs in order, with one head shape"
    heads, d = branches[0][1], branches[0][2]
    product = lookup.producer(split.inputs[0])
    if product is None or product.op_type != "FusedMatMul" or product.domain != DOMAIN:
        return f"the Split '{split.name}' does not read a FusedMatMul"
    reason = _product_reason(product, heads, d)
    if reason:
        return reason
    axis = int(split.attrs.get("axis", 0))
    if axis not in (-1, 2):
        return f"the Split '{split.name}' is along axis {axis}, not the columns"
    if any(lookup.readers(v) != [m.node(f"r{w}")] for v, w in zip(split.outputs, "qkv")) or \
            lookup.readers(product.outputs[0]) != [split] or \
            any(v in lookup.graph.outputs for v in list(split.outputs) + [product.outputs[0]]):
        return "the projection or its thirds are read by other layers too"
    x, out = product.inputs[0], m.node("sdpa").outputs[0]
    if out.shape is not None and list(out.shape) != [x.shape[0], heads, x.shape[1], d]:
        return f"the attention's output {list(out.shape)} is not [B, H, S, D] of its queries (the mask widens it)"
    bias = product.inputs[2] if len(product.inputs) > 2 else None
    weight, packed_bias = pack_heads(product.inputs[1].const, None if bias is None else bias.const.reshape(-1), heads)
    parts = _Parts(product, x, weight, packed_bias, heads)
    return accepts(_probe(m, parts)) or parts


def _product_reason(product: Node, heads: int, d: int) -> Optional[str]:
    inputs, attrs = product.inputs, product.attrs
    if len(inputs) > 3 or attrs.get("activation") or int(attrs.get("transA", 0)) or int(attrs.get("transB", 0)) or \
            float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
        return f"the FusedMatMul '{product.name}' has an epilogue beyond a bias"
    x, w = inputs[0], inputs[1]
    if w is None or w.const is None or w.const.ndim != 2:
        return f"the FusedMatMul '{product.name}''s weight is not a constant matrix"
    if x.shape is None or len(x.shape) != 3:
        return f"the FusedMatMul '{product.name}' does not read [batch, sequence, embedding] rows"
    columns = w.const.shape[1]
    if head_dim(columns, heads) != d:
        return f"the FusedMatMul '{product.name}''s {columns} columns are not Q, K, V of {heads} heads of {d}"
    bias = inputs[2] if len(inputs) > 2 else None
    if bias is not None and (bias.const is None or bias.const.size != columns):
        return f"the FusedMatMul '{product.name}''s bias is not a constant row"
    return None


def _probe(m: Match, parts: _Parts) -> Node:
    """The fused layer as the rewrite would make it, unnamed, for `accepts` to judge."""
    sdpa, dtype = m.node("sdpa"), parts.product.inputs[1].dtype
    weight = Value("W", TensorType(dtype, tuple(parts.weight.shape)), const=parts.weight)
    bias = None if parts.bias is None else Value("bias", TensorType(dtype, tuple(parts.bias.shape)), const=parts.bias)
    mask = sdpa.inputs[3] if len(sdpa.inputs) > 3 else None
    attrs = {"heads": parts.heads, "scale": float(sdpa.attrs["scale"])}
    return Node("ProjectedAttention", [parts.x, weight, bias, mask], list(sdpa.outputs), attrs,
                name=sdpa.name, domain=DOMAIN, opset=1)


def projected_attention_rules(lookup: GraphLookup, accepts: Accepts) -> list[Rule]:
    def check(m: Match) -> Optional[str]:
        parts = _parts(lookup, m, accepts)
        return parts if isinstance(parts, str) else None

    def rewrite(m: Match, rw: Rewriter) -> list[Node]:
        parts = _parts(lookup, m, accepts)
        sdpa, w = m.node("sdpa"), parts.product.inputs[1]
        weight = rw.const(parts.weight, f"{w.name}_heads")
        bias = None if parts.bias is None else rw.const(parts.bias, f"{parts.product.inputs[2].name}_heads")
        mask = sdpa.inputs[3] if len(sdpa.inputs) > 3 else None
        inputs = [parts.x, weight, bias, mask]
        while inputs[-1] is None:
            inputs.pop()
        attrs = {"heads": parts.heads, "scale": float(sdpa.attrs["scale"])}
        node = new_node(rw, "ProjectedAttention", inputs, sdpa.outputs, attrs, like=sdpa, domain=DOMAIN, opset=1)
        node.meta.update({k: v for k, v in sdpa.meta.items() if k.startswith("precision")})
        node.meta["fused_from"] = parts.product.meta.get("fused_from", [parts.product.name]) + \
            sdpa.meta.get("fused_from", [sdpa.name])
        return [node]

    def branch(which: str) -> Pat:
        return Pat("Transpose", [Pat("Reshape", [Var(f"{which}_cols")], name=f"r{which}")], name=f"t{which}")

    # ScaledDotProductAttention(head splits of Split(FusedMatMul(x, W, b))) -> ProjectedAttention(x, W, b, mask)
    pattern = Pat("ScaledDotProductAttention", [branch("q"), branch("k"), branch("v")], name="sdpa", domain=DOMAIN)
    return [Rule("projected_attention", pattern, rewrite, check)]
