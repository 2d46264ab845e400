"""The residual Add before a LayerNormalization joins it: one tensorkiln::SkipLayerNormalization layer.

    LayerNormalization(Add(x, skip), gamma, beta) -> SkipLayerNormalization(x, skip, gamma, beta)

When something else reads the Add's sum (a pre-LN transformer's next residual, or a graph output),
the fused layer gives the sum as its second output, the same value the Add produced, so its
readers are untouched. The Add is therefore matched as a `Var` whose producer the check looks up
(the engine offers only matches whose inner values have no other reader); `fuse_skip_layer_norms`
then puts the fused layer where the Add was and removes the Add.

Which Add: the one the LayerNorm reads. In transformer exports that is the residual Add of
Add(Add(MatMul(h, W), bias), residual); the bias Add inside it stays for the GEMM epilogue, where
cuBLASLt adds it for free. An Add of a constant to a MatMul/Gemm/Conv output is such a bias
itself, and is left to the epilogue too.

The fused layer is created only in the form the fused kernels take (ops/skip_layer_norm.py):
static normalized dims of at most MAX_NORMALIZED_SIZE elements, one operand of the sum's shape
and the other broadcast over whole rows, one dtype throughout.
"""

from __future__ import annotations

from typing import Optional, Union

from ....ir import Node, Value
from ....ops.fused_conv import DOMAIN
from ....ops.skip_layer_norm import MAX_NORMALIZED_SIZE, normalized_size, row_broadcast_reason
from ..rule import Match, Pat, Rewriter, Rule, Var
from .patterns import GraphLookup, float_reason, new_node, rank_of

# Layers whose output plus a constant is a bias the epilogue fusion (fuse_epilogues) takes.
BIASED_PRODUCERS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "FusedMatMul", "FusedConv")


class _Parts:
    """What the rewrite needs of a checked match."""

    def __init__(self, add: Node, x: Value, skip: Value, axis: int, wants_sum: bool):
        self.add, self.x, self.skip, self.axis, self.wants_sum = add, x, skip, axis, wants_sum


def _sum_read_elsewhere(lookup: GraphLookup, total: Value, ln: Node) -> bool:
    return any(v is total for v in lookup.graph.outputs) or any(r is not ln for r in lookup.readers(total))


def _defined_before(lookup: GraphLookup, v: Optional[Value], node: Node) -> bool:
    """Whether `v` exists before `node` runs (a constant, a graph input, or an earlier node's output)."""
    producer = lookup.producer(v)
    if v is None or producer is None:
        return True
    nodes = lookup.graph.nodes
    return nodes.index(producer) < nodes.index(node)


def _is_bias_add(lookup: GraphLookup, a: Value, b: Value) -> bool:
    for value, other in ((a, b), (b, a)):
        producer = lookup.producer(value)
        if other.const is not None and producer is not None and producer.op_type in BIASED_PRODUCERS:
            return True
    return False


def _operands(a: Value, b: Value, total: Value, axis: int) -> Union[tuple[Value, Value], str]:
    """(x, skip): x of the sum's shape, skip broadcast over whole rows; or why neither order works."""
    reasons = []
    for x, skip in ((a, b), (b, a)):
        if x.shape is None or any(d is None for d in x.shape) or tuple(x.shape) != tuple(total.shape):
            reasons.append(f"'{x.name}' {x.shape and list(x.shape)} is not known to have the sum's shape "
                           f"{list(total.shape)}")
            continue
        reason = row_broadcast_reason(x.shape, skip.shape, axis)
        if reason is None:
            return x, skip
        reasons.append(reason)
    return reasons[0] if reasons[0] == reasons[1] else f"{reasons[0]}; swapped: {reasons[1]}"


def _parts(lookup: GraphLookup, m: Match) -> Union[_Parts, str]:
    ln = m.node("ln")
    total = m.value("sum")
    if len(ln.outputs) != 1:
        return f"LayerNormalization '{ln.name}' also returns its mean and inverse std"
    add = lookup.producer(total)
    if add is None or add.op_type != "Add" or add.domain or len(add.inputs) != 2:
        return f"the normalized value '{total.name}' is not an Add"
    a, b = add.inputs
    gamma = ln.inputs[1]
    beta = ln.inputs[2] if len(ln.inputs) > 2 else None
    reason = float_reason(total, "the sum")
    if reason:
        return reason
    for v in (a, b, gamma, beta):
        if v is not None and v.dtype != total.dtype:
            got = v.dtype.short if v.dtype is not None else "of unknown dtype"
            return f"'{v.name}' is {got}, the sum {total.dtype.short}: the fused layer takes one dtype"
    rank = rank_of(total)
    if rank is None or rank == 0:
        return f"the rank of the sum '{total.name}' is {'unknown' if rank is None else 0}"
    axis = int(ln.attrs["axis"])
    axis = axis + rank if axis < 0 else axis
    size = normalized_size(total.shape, axis)
    if size is None:
        return f"the normalized dims {list(total.shape[axis:])} of '{total.name}' are not static"
    if size > MAX_NORMALIZED_SIZE:
        return f"rows of {size} elements exceed the fused kernel's {MAX_NORMALIZED_SIZE}"
    if _is_bias_add(lookup, a, b):
        return f"Add '{add.name}' adds a constant bias to a linear layer: the GEMM/conv epilogue takes it"
    operands = _operands(a, b, total, axis)
    if isinstance(operands, str):
        return operands
    wants_sum = _sum_read_elsewhere(lookup, total, ln)
    if wants_sum and not all(_defined_before(lookup, v, add) for v in (gamma, beta)):
        # The fused layer takes the Add's place (the sum's readers may precede the LayerNorm).
        return "the sum is read elsewhere and gamma/beta are computed after the Add"
    return _Parts(add, operands[0], operands[1], axis, wants_sum)


def skip_layer_norm_rules(lookup: GraphLookup) -> list[Rule]:
    def check(m: Match) -> Optional[str]:
        parts = _parts(lookup, m)
        return parts if isinstance(parts, str) else None

    def rewrite(m: Match, rw: Rewriter) -> list[Node]:
        parts = _parts(lookup, m)
        ln = m.node("ln")
        outputs = list(ln.outputs) + ([m.value("sum")] if parts.wants_sum else [])
        rw.graph.opsets.setdefault(DOMAIN, 1)
        attrs = {"axis": parts.axis, "epsilon": float(ln.attrs["epsilon"]), "stash_type": int(ln.attrs["stash_type"]),
                 "sum_output": int(parts.wants_sum)}
        inputs = [parts.x, parts.skip] + list(ln.inputs[1:3])
        while inputs[-1] is None:
            inputs.pop()
        node = new_node(rw, "SkipLayerNormalization", inputs, outputs, attrs, like=ln, domain=DOMAIN, opset=1)
        node.meta["fused_from"] = parts.add.meta.get("fused_from", [parts.add.name]) + \
            ln.meta.get("fused_from", [ln.name])
        return [node]

    # LayerNormalization(Add(x, skip), gamma, beta) -> SkipLayerNormalization(x, skip, gamma, beta) [+ sum]
    return [Rule("skip_layer_norm", Pat("LayerNormalization", [Var("sum"), Var("gamma")], name="ln"), rewrite, check)]
