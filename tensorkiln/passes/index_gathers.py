"""Gathers whose indices count through the data in order become views (Slice, Unsqueeze).

Exporters write `position_ids[:, :seq]` lookups and `mask[batch_idx, kv_idx]` advanced
indexing as a Gather whose indices are index arithmetic: a Slice of a constant arange, or
Range(0, n) unsqueezed, scaled and added. At fixed shapes `fold_constants` folds all of it.
In an engine for a range of shapes it stays, and every call pays for the Range, the index
arithmetic and the gather: on BERT-base with a dynamic batch and sequence, about ten small
kernels that the fixed-shape engine does not have. Where the indices are provably the
positions themselves, the gather reads the data in place:

- `positions`: Gather(T, Slice(C, s, e, [a]), axis=g) with C a constant arange(n) along axis a
  (size 1 on every other axis), unit steps, and T's axis g of size n
  -> Unsqueeze(Slice(T, s, e, [g]), C's other axes). Slice normalises and clamps s and e
  against the same n in both forms, so they take the same rows.
- `enumeration`: Gather(Flatten(X, rank(X)), I, axis=0), where I = sum of Range(0, d_k, 1) * w_k,
  each range unsqueezed to its own axis of I (size 1 elsewhere), the axes in X's dim order,
  d_k = X's dim k and w_k its row-major stride (the product of X's later dims)
  -> Unsqueeze(X, every axis of the output that no range runs along). Flatten at axis rank(X)
  gives [numel, 1], so the gather's last axis has size 1, one of those axes.

The proofs read symbolic shape values (symbolic_dims.analyze_shapes): a Range's limit and a
stride are expressions in the input dims, compared with X's symbolic dims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import sympy

from ..ir import Graph, Node, Value
from .context import PassContext
from .fusion import Rewriter
from .noops import axes_of, const_ints, has_input
from .symbolic_dims import ShapeAnalysis, analyze_shapes


@dataclass(frozen=True)
class _Counter:
    """An integer tensor of `rank` dims whose entry at index i is sum(i[axis] * stride): each
    axis in `strides` counts 0..extent-1 (its extent), every other axis has size 1."""

    rank: int
    strides: dict[int, sympy.Expr]
    extents: dict[int, sympy.Expr]


def index_gathers_as_views(graph: Graph, ctx: PassContext) -> Graph:
    """Replace each Gather whose indices provably enumerate its data in order by a view."""
    gathers = [n for n in graph.nodes if n.op_type == "Gather" and not n.domain]
    if not gathers:
        return graph
    producers = {v.name: n for n in graph.nodes for v in n.outputs}
    analysis: Optional[ShapeAnalysis] = None
    rw = Rewriter(graph, graph.defined_names() | {n.name for n in graph.nodes})
    for node in gathers:
        rewrite = _positions(node, producers, rw)
        rule, anchor = "gather_positions_as_slice", node
        if rewrite is None:
            if analysis is None:
                analysis = analyze_shapes(graph, ctx.dim_bounds)
            rewrite = _enumeration(node, producers, analysis, rw)
            rule = "gather_enumeration_as_unsqueeze"
            # The view reads only X: it goes right after X's producer, so that the readers of the
            # indices' shape (below) can read the view's instead, and the index arithmetic dies.
            anchor = producers.get(node.inputs[0].name)
            anchor = producers.get(anchor.inputs[0].name) if anchor is not None else None
        if isinstance(rewrite, str):
            ctx.declined(rule, node.name, rewrite)
        if not isinstance(rewrite, list):
            continue
        nodes = graph.nodes
        at = nodes.index(node)
        del nodes[at]
        where = at if anchor is node else (nodes.index(anchor) + 1 if anchor is not None else 0)
        nodes[where:where] = rewrite
        if rule == "gather_enumeration_as_unsqueeze":
            _read_index_shapes_from(node.inputs[1], node.outputs[0], nodes, where + len(rewrite))
        ctx.rewrote(rule, node.name, "Gather -> " + "+".join(n.op_type for n in rewrite))
    return graph


def _read_index_shapes_from(indices: Value, view: Value, nodes: list[Node], first: int) -> None:
    """Shape layers after `first` reading the indices read the view instead: its shape is the
    indices' shape and one trailing 1, so Shape with an explicit end gives the same dims."""
    rank = len(indices.shape) if indices.shape is not None else None
    if rank is None:
        return
    for reader in nodes[first:]:
        if reader.op_type != "Shape" or reader.domain or reader.inputs[0] is not indices:
            continue
        start, end = int(reader.attrs.get("start", 0) or 0), reader.attrs.get("end")
        end = rank if end is None else int(end)
        start, end = (min(max(a + rank if a < 0 else a, 0), rank) for a in (start, end))
        reader.inputs[0] = view
        reader.attrs = {**reader.attrs, "start": start, "end": end}
        reader.opset = max(reader.opset, 15)


def _axes_const(rw: Rewriter, axes: list[int], base: str) -> Value:
    return rw.const(np.array(axes, dtype=np.int64), base)


def _unsqueezed(rw: Rewriter, node: Node, x: Value, axes: list[int]) -> list[Node]:
    """Unsqueeze(x, axes) giving the Gather's output (nothing to insert: an Identity)."""
    if not axes:
        return [rw.node("Identity", [x], node.outputs, like=node)]
    return [rw.node("Unsqueeze", [x, _axes_const(rw, axes, f"{node.name}_axes")], node.outputs,
                    opset=max(node.opset, 13), like=node)]


# -- Gather(T, Slice(arange constant)) -----------------------------------------------------------

def _positions(node: Node, producers: dict[str, Node], rw: Rewriter) -> Union[list[Node], str, None]:
    """The view, why not (indices that are a Slice of an integer constant), or None (other indices)."""
    table, indices = node.inputs[0], node.inputs[1]
    slicer = producers.get(indices.name) if indices is not None else None
    if slicer is None or slicer.op_type != "Slice" or slicer.domain or slicer.opset < 10:
        return None
    counted = slicer.inputs[0]
    if counted is None or counted.const is None:
        return None
    c = np.asarray(counted.const)
    if c.dtype.kind not in "iu" or c.ndim == 0:
        return None
    long_axes = [i for i, d in enumerate(c.shape) if d != 1]
    axis = long_axes[0] if len(long_axes) == 1 else (0 if c.ndim == 1 else None)
    if axis is None or not np.array_equal(c.reshape(-1), np.arange(c.size)):
        return f"the sliced constant '{counted.name}' is not 0, 1, 2, ... along one axis"
    slice_axes = const_ints(slicer, 3) if has_input(slicer, 3) else list(range(c.ndim))
    steps = const_ints(slicer, 4) if has_input(slicer, 4) else None
    if slice_axes is None or len(slice_axes) != 1 or (steps is not None and steps != [1]):
        return f"'{slicer.name}' does not take a unit-step run along one constant axis"
    if slice_axes[0] % c.ndim != axis:
        return f"'{slicer.name}' slices an axis of size 1"
    table_shape = table.shape if table is not None else None
    g = int(node.attrs.get("axis", 0))
    if table_shape is None or not -len(table_shape) <= g < len(table_shape):
        return "the gathered tensor's rank is unknown"
    g %= len(table_shape)
    if table_shape[g] != c.shape[axis]:
        return (f"the gathered axis has {table_shape[g]} entries and the positions {c.shape[axis]}: "
                "a Slice would clamp differently")
    starts, ends = slicer.inputs[1], slicer.inputs[2]
    sliced = rw.value(f"{node.outputs[0].name}_rows")
    take = rw.node("Slice", [table, starts, ends, _axes_const(rw, [g], f"{node.name}_axis")], [sliced],
                   name=f"{node.name}_slice", opset=max(node.opset, 10))
    other = [g + i for i in range(c.ndim) if i != axis]
    return [take] + _unsqueezed(rw, node, sliced, other)


# -- Gather(Flatten(X), enumeration of X's positions) --------------------------------------------

def _enumeration(node: Node, producers: dict[str, Node], analysis: ShapeAnalysis,
                 rw: Rewriter) -> Union[list[Node], str, None]:
    """The view, why not (a gather along a Flatten's rows), or None (any other gather)."""
    data, indices = node.inputs[0], node.inputs[1]
    flatten = producers.get(data.name) if data is not None else None
    if flatten is None or flatten.op_type != "Flatten" or flatten.domain or int(node.attrs.get("axis", 0)) != 0:
        return None
    x = flatten.inputs[0]
    x_shape = analysis.shape(x)
    if x_shape is None or not x_shape:
        return "the flattened tensor's shape is unknown"
    r = int(flatten.attrs.get("axis", 1))
    if r < 0:
        r += len(x_shape)
    if r != len(x_shape):
        return f"'{flatten.name}' keeps {len(x_shape) - r} axes in each row: the rows are not single elements"
    counter = _counter(indices, producers, analysis, depth=0)
    if counter is None:
        return "the indices are not a sum of scaled, unsqueezed Range(0, n, 1)"
    if len(counter.strides) != len(x_shape):
        return f"the indices count along {len(counter.strides)} axes, the tensor has {len(x_shape)}"
    axes = sorted(counter.strides)
    stride = sympy.Integer(1)
    for k in reversed(range(len(x_shape))):
        a = axes[k]
        if sympy.simplify(counter.extents[a] - x_shape[k]) != 0 or sympy.simplify(counter.strides[a] - stride) != 0:
            return (f"the indices do not count through the tensor's positions in order (axis {a}: "
                    f"{counter.extents[a]} steps of {counter.strides[a]}; dim {k} needs {x_shape[k]} of {stride})")
        stride = stride * x_shape[k]
    out_rank = counter.rank + 1  # Flatten's trailing axis of size 1
    other = [i for i in range(out_rank) if i not in counter.strides]
    return _unsqueezed(rw, node, x, other)


def _scalar(v: Optional[Value], analysis: ShapeAnalysis) -> Optional[sympy.Expr]:
    """The one entry of a scalar or one-element integer value, as an expression."""
    entries = analysis.value(v)
    if entries is None or len(entries) != 1 or entries[0] is None or isinstance(entries[0], bool):
        return None
    return sympy.sympify(entries[0])


def _counter(v: Optional[Value], producers: dict[str, Node], analysis: ShapeAnalysis,
             depth: int) -> Optional[_Counter]:
    node = producers.get(v.name) if v is not None else None
    if node is None or node.domain or depth > 16:
        return None
    ins = node.inputs
    if node.op_type == "Range":
        start, limit, delta = (_scalar(ins[i], analysis) for i in range(3))
        if start is None or limit is None or delta is None or start != 0 or delta != 1:
            return None
        return _Counter(1, {0: sympy.Integer(1)}, {0: limit})
    if node.op_type == "Unsqueeze":
        inner = _counter(ins[0], producers, analysis, depth + 1)
        known, axes = axes_of(node)
        if inner is None or not known or axes is None:
            return None
        rank = inner.rank + len(axes)
        added = sorted(a % rank for a in axes)
        kept = [i for i in range(rank) if i not in added]
        return _Counter(rank, {kept[a]: s for a, s in inner.strides.items()},
                        {kept[a]: e for a, e in inner.extents.items()})
    if node.op_type == "Mul":
        for i in (0, 1):
            inner = _counter(ins[i], producers, analysis, depth + 1)
            factor = _scalar(ins[1 - i], analysis)
            if inner is not None and factor is not None and _broadcast_free(ins[1 - i], inner.rank):
                return _Counter(inner.rank, {a: s * factor for a, s in inner.strides.items()}, inner.extents)
        return None
    if node.op_type == "Add":
        a, b = (_counter(ins[i], producers, analysis, depth + 1) for i in (0, 1))
        if a is None or b is None:
            return None
        rank = max(a.rank, b.rank)
        a_strides = {k + rank - a.rank: s for k, s in a.strides.items()}
        b_strides = {k + rank - b.rank: s for k, s in b.strides.items()}
        if set(a_strides) & set(b_strides):
            return None
        extents = {k + rank - a.rank: e for k, e in a.extents.items()}
        extents.update({k + rank - b.rank: e for k, e in b.extents.items()})
        return _Counter(rank, {**a_strides, **b_strides}, extents)
    return None


def _broadcast_free(v: Value, rank: int) -> bool:
    """Whether multiplying by `v` (one element) leaves the other operand's shape as it is."""
    shape = v.shape
    return shape is not None and len(shape) <= rank


__all__ = ["index_gathers_as_views"]
