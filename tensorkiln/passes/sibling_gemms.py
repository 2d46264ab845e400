"""Merge matrix products that read the same input with constant weights into one wider product.

    # FusedMatMul(x, Wq, bq), FusedMatMul(x, Wk, bk), FusedMatMul(x, Wv, bv)
    #   -> Split(FusedMatMul(x, [Wq | Wk | Wv], [bq | bk | bv]), axis=-1)

A transformer's query, key and value projections are the common case: three GEMMs of N
columns become one of 3N, which fills the GPU better and launches two kernels fewer (at
batch 1 each projection is a few microseconds, mostly launch and ramp-up). The Split's
outputs are views of the merged product (column slices; no copy), and the head-split
Reshape/Transpose after them stay views, which the attention kernels read through their
strides.

Siblings merge when they are the same op with the same attributes (activation and its
parameters, alpha, beta, transB), read the same first input without transposing it, have
constant 2-D weights with the same K and dtype, and all have a row bias or none; a residual
input keeps a layer out (its second operand is not shared). Runs after epilogue fusion, so
the biases and activations are already inside the layers being merged.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..ir import Graph, Node, Value
from .context import PassContext
from .fusion.rule import Rewriter

MERGE = "merge_sibling_gemms"
_PRODUCTS = {("", "MatMul"), ("", "Gemm"), ("tensorkiln", "FusedMatMul")}
# Attributes that must agree for the merged layer to compute every sibling's epilogue.
_SIGNATURE_ATTRS = ("alpha", "beta", "transA", "transB", "activation", "activation_params",
                    "residual_after_activation")


def _inputs(node: Node, i: int) -> Optional[Value]:
    return node.inputs[i] if i < len(node.inputs) else None


def _columns(node: Node) -> int:
    w = node.inputs[1].const
    return int(w.shape[0] if node.attrs.get("transB") else w.shape[1])


def _row_bias(node: Node) -> Optional[np.ndarray]:
    """The bias as a 1-D [N] array (None without one)."""
    bias = _inputs(node, 2)
    if bias is None:
        return None
    c = np.asarray(bias.const)
    return np.broadcast_to(c.reshape(-1) if c.size > 1 else c.reshape(()), (_columns(node),))


def _reason(node: Node) -> Optional[str]:
    """Why this product cannot join a merge (None when it can)."""
    weight, bias = _inputs(node, 1), _inputs(node, 2)
    if weight is None or weight.const is None:
        return "the weight is not a constant"
    if weight.const.ndim != 2:
        return f"the weight has rank {weight.const.ndim}"
    if node.attrs.get("transA"):
        return "transA (the shared input is read transposed)"
    if bias is not None:
        if bias.const is None:
            return "the bias is not a constant"
        c = np.asarray(bias.const)
        if c.ndim > 2 or any(d != 1 for d in c.shape[:-1]) or c.size not in (1, _columns(node)):
            return f"the bias {list(c.shape)} is not a row bias"
    if _inputs(node, 3) is not None:
        return "a residual input (not shared between siblings)"
    return None


def _signature(node: Node) -> tuple:
    w = node.inputs[1].const
    k = w.shape[1] if node.attrs.get("transB") else w.shape[0]
    attrs = tuple((name, repr(node.attrs.get(name))) for name in _SIGNATURE_ATTRS)
    bias = _inputs(node, 2)
    return (node.domain, node.op_type, attrs, int(k), str(w.dtype),
            None if bias is None else str(np.asarray(bias.const).dtype))


def merge_sibling_gemms(graph: Graph, ctx: PassContext) -> Graph:
    outputs = {v.name for v in graph.outputs}
    groups: dict[tuple[str, tuple], list[Node]] = {}
    for node in graph.nodes:
        if (node.domain, node.op_type) not in _PRODUCTS or not node.inputs or node.inputs[0] is None:
            continue
        reason = _reason(node)
        if reason is not None:
            continue
        if any(v.name in outputs for v in node.outputs if v is not None):
            continue  # a graph output keeps its own buffer (a slice view would not be one)
        groups.setdefault((node.inputs[0].name, _signature(node)), []).append(node)
    siblings = [g for g in groups.values() if len(g) >= 2]
    if not siblings:
        return graph
    rw = Rewriter(graph, graph.defined_names() | {n.name for n in graph.nodes})
    replaced: dict[int, list[Node]] = {}
    removed: set[int] = set()
    for group in siblings:
        merged = _merge(group, rw)
        replaced[id(group[0])] = merged
        removed.update(id(n) for n in group[1:])
        ctx.rewrote(MERGE, "+".join(n.name for n in group),
                    f"{len(group)} x {group[0].op_type} -> one of {sum(_columns(n) for n in group)} columns + Split")
    # The merged layer takes the first sibling's place: all it reads is defined before that.
    nodes: list[Node] = []
    for node in graph.nodes:
        if id(node) in replaced:
            nodes.extend(replaced[id(node)])
        elif id(node) not in removed:
            nodes.append(node)
    graph.nodes = nodes
    dropped = {v.name for group in siblings for n in group for v in n.inputs[1:3] if v is not None}
    read = {v.name for n in graph.nodes for v in n.inputs if v is not None} | outputs
    graph.initializers = [v for v in graph.initializers if v.name not in dropped or v.name in read]
    return graph


def _merge(group: list[Node], rw: Rewriter) -> list[Node]:
    first = group[0]
    trans_b = bool(first.attrs.get("transB"))
    weight = np.concatenate([n.inputs[1].const for n in group], axis=0 if trans_b else 1)
    inputs: list[Optional[Value]] = [first.inputs[0], rw.const(weight, f"{first.name}_merged_weight")]
    biases = [_row_bias(n) for n in group]
    if biases[0] is not None:
        inputs.append(rw.const(np.concatenate(biases).astype(np.asarray(first.inputs[2].const).dtype),
                               f"{first.name}_merged_bias"))
    columns = [_columns(n) for n in group]
    attrs: dict[str, Any] = dict(first.attrs)
    product = rw.value(f"{first.outputs[0].name}_merged")
    name = "+".join(n.name for n in group)
    merged = rw.node(first.op_type, inputs, [product], attrs, name=name, domain=first.domain, like=first)
    split = rw.node("Split", [product], [n.outputs[0] for n in group], {"axis": -1, "split": columns},
                    name=f"{name}/split", opset=11)
    return [merged, split]
