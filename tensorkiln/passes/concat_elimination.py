"""Make Concat layers disappear where their inputs can be written straight into the output.

The main rewrite merges sibling producers: layers that read the same input with the same
attributes and constant weights, whose outputs are concatenated along their output-channel
axis, are one layer with the weights concatenated; that layer's output IS the concat:

    # Concat(Conv(x, W1, b1), Conv(x, W2, b2), axis=1) -> Conv(x, [W1; W2], [b1; b2])
    # Concat(Gemm(A, B1, C1), Gemm(A, B2, C2), axis=1) -> Gemm(A, [B1 | B2], [C1 | C2])
    # Concat(MatMul(A, B1), MatMul(A, B2), axis=-1) -> MatMul(A, [B1 | B2])

Each branch may continue with per-channel elementwise layers of the same kinds (Conv ->
Relu, Conv -> Mul(scale) -> Add(shift)); they merge too, their per-channel constants
concatenated the same way:

    # Concat(f(y1, c1), f(y2, c2)) -> f(Concat(y1, y2), Concat(c1, c2))   f elementwise, c per-channel

Only adjacent inputs merge (channel order is kept); when only some inputs merge, the
Concat stays with fewer inputs. The trivial cases that need no constant folding:

    # Concat(a, Concat(b, c), d) -> Concat(a, b, c, d)         same axis, inner read only here
    # Concat(a, empty, b) -> Concat(a, b)                       empty: size 0 along the axis
    # Concat(a) -> a                                            the layer is removed, readers rewired

Concats of constants are left to constant folding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..ir import Graph, Node, Value, free_names_of_subgraphs
from ..ops.infer import infer_node
from .context import PassContext
from .elementwise_chains import BINARY_STEP_OPS, UNARY_STEP_OPS
from .fusion.rule import Rewriter

MERGE = "concat_merge_siblings"
FLATTEN = "concat_flatten"
DROP_EMPTY = "concat_drop_empty"
SINGLE = "concat_single_input"


# ---- the producers that can write into slices of a concat (data) -----------------------

@dataclass(frozen=True)
class SiblingMerge:
    """How one op's siblings merge along the output-channel axis."""

    op: str
    # Output rank -> the axis the output channels are on.
    channel_axis: Callable[[int], int]
    # Why this node alone cannot be merged (non-constant weights...), or None.
    check: Callable[[Node], Optional[str]]
    # What must be equal between siblings (attributes, weight shapes but the channel count).
    signature: Callable[[Node], dict[str, Any]]
    # How many output channels the node produces.
    channels: Callable[[Node], int]
    # The merged node's inputs after the shared input 0, and its attributes.
    merge: Callable[[list[Node], Rewriter], tuple[list[Optional[Value]], dict[str, Any]]]


def _input(node: Node, i: int) -> Optional[Value]:
    return node.inputs[i] if i < len(node.inputs) else None


def _const_input(node: Node, i: int, what: str, optional: bool = False) -> Optional[str]:
    v = _input(node, i)
    if v is None:
        return None if optional else f"'{node.name}' has no {what}"
    if not v.is_const:
        return f"{what} '{v.name}' of '{node.name}' is not a constant"
    return None


def _conv_check(node: Node) -> Optional[str]:
    reason = _const_input(node, 1, "weights") or _const_input(node, 2, "bias", optional=True)
    if reason:
        return reason
    if int(node.attrs.get("group") or 1) != 1:
        return f"'{node.name}' is a grouped convolution (group={node.attrs.get('group')})"
    if node.inputs[1].const.ndim < 3:
        return f"weights of '{node.name}' have rank {node.inputs[1].const.ndim}"
    return None


def _conv_signature(node: Node) -> dict[str, Any]:
    w = node.inputs[1].const
    nd = w.ndim - 2
    a = node.attrs
    auto_pad = a.get("auto_pad") or "NOTSET"
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    return {
        "auto_pad": auto_pad,
        "kernel_shape": [int(k) for k in (a.get("kernel_shape") or w.shape[2:])],
        "strides": [int(s) for s in (a.get("strides") or [1] * nd)],
        "dilations": [int(d) for d in (a.get("dilations") or [1] * nd)],
        # Explicit pads mean something only without auto_pad.
        "pads": [int(p) for p in (a.get("pads") or [0] * (2 * nd))] if auto_pad == "NOTSET" else None,
        "weight shape (input channels, kernel)": list(w.shape[1:]),
        "weight dtype": str(w.dtype),
    }


def _conv_merge(nodes: list[Node], rw: Rewriter) -> tuple[list[Optional[Value]], dict[str, Any]]:
    weights = np.concatenate([n.inputs[1].const for n in nodes], axis=0)
    inputs: list[Optional[Value]] = [rw.const(weights, f"{nodes[0].name}_merged_W")]
    if any(_input(n, 2) is not None for n in nodes):
        bias = np.concatenate([n.inputs[2].const if _input(n, 2) is not None
                               else np.zeros(n.inputs[1].const.shape[0], dtype=weights.dtype) for n in nodes])
        inputs.append(rw.const(bias, f"{nodes[0].name}_merged_B"))
    return inputs, dict(nodes[0].attrs)


def _gemm_check(node: Node) -> Optional[str]:
    reason = _const_input(node, 1, "B") or _const_input(node, 2, "C", optional=True)
    if reason:
        return reason
    c = _input(node, 2)
    if c is not None and c.const.ndim > 2:
        return f"C of '{node.name}' has rank {c.const.ndim}"
    return None


def _gemm_channels(node: Node) -> int:
    b = node.inputs[1].const
    return int(b.shape[0] if node.attrs.get("transB") else b.shape[1])


def _gemm_signature(node: Node) -> dict[str, Any]:
    b = node.inputs[1].const
    a = node.attrs
    return {"alpha": float(a.get("alpha", 1.0)), "beta": float(a.get("beta", 1.0)), "transA": int(a.get("transA", 0)),
            "transB": int(a.get("transB", 0)), "K": int(b.shape[1] if a.get("transB") else b.shape[0]),
            "B dtype": str(b.dtype)}


def _gemm_c_rows(node: Node) -> int:
    c = _input(node, 2)
    if c is None:
        return 1
    return int(c.const.reshape((1,) * (2 - c.const.ndim) + c.const.shape).shape[0])


def _gemm_merge(nodes: list[Node], rw: Rewriter) -> tuple[list[Optional[Value]], dict[str, Any]]:
    trans_b = bool(nodes[0].attrs.get("transB"))
    b = np.concatenate([n.inputs[1].const for n in nodes], axis=0 if trans_b else 1)
    inputs: list[Optional[Value]] = [rw.const(b, f"{nodes[0].name}_merged_B")]
    if any(_input(n, 2) is not None for n in nodes):
        rows = max(_gemm_c_rows(n) for n in nodes)
        parts = []
        for n in nodes:
            cols = _gemm_channels(n)
            c = _input(n, 2)
            if c is None:
                parts.append(np.zeros((rows, cols), dtype=b.dtype))
            else:
                c2 = c.const.reshape((1,) * (2 - c.const.ndim) + c.const.shape)
                parts.append(np.broadcast_to(c2, (rows, cols)))
        c_merged = np.concatenate(parts, axis=1)
        inputs.append(rw.const(c_merged.reshape(-1) if rows == 1 else c_merged, f"{nodes[0].name}_merged_C"))
    return inputs, dict(nodes[0].attrs)


def _matmul_check(node: Node) -> Optional[str]:
    reason = _const_input(node, 1, "B")
    if reason:
        return reason
    if node.inputs[1].const.ndim < 2:
        return f"B of '{node.name}' is 1-D: its output has no column axis"
    return None


def _matmul_signature(node: Node) -> dict[str, Any]:
    b = node.inputs[1].const
    return {"B shape but columns": list(b.shape[:-1]), "B dtype": str(b.dtype)}


def _matmul_merge(nodes: list[Node], rw: Rewriter) -> tuple[list[Optional[Value]], dict[str, Any]]:
    b = np.concatenate([n.inputs[1].const for n in nodes], axis=-1)
    return [rw.const(b, f"{nodes[0].name}_merged_B")], dict(nodes[0].attrs)


SIBLING_MERGES: dict[str, SiblingMerge] = {m.op: m for m in (
    # Concat(Conv(x, W1, b1), Conv(x, W2, b2), axis=1) -> Conv(x, [W1; W2], [b1; b2])
    SiblingMerge("Conv", lambda rank: 1, _conv_check, _conv_signature, lambda n: int(n.inputs[1].const.shape[0]),
                 _conv_merge),
    # Concat(Gemm(A, B1, C1), Gemm(A, B2, C2), axis=1) -> Gemm(A, [B1 | B2], [C1 | C2])
    SiblingMerge("Gemm", lambda rank: rank - 1, _gemm_check, _gemm_signature, _gemm_channels, _gemm_merge),
    # Concat(MatMul(A, B1), MatMul(A, B2), axis=-1) -> MatMul(A, [B1 | B2])
    SiblingMerge("MatMul", lambda rank: rank - 1, _matmul_check, _matmul_signature,
                 lambda n: int(n.inputs[1].const.shape[-1]), _matmul_merge),
)}

# Per-channel elementwise layers a branch may continue with: unary ones with equal attributes,
# binary ones with a per-channel constant operand, Clip with equal constant bounds.
TAIL_UNARY = frozenset(UNARY_STEP_OPS)
TAIL_BINARY = frozenset(BINARY_STEP_OPS) | {"Max", "Min"}


# ---- graph bookkeeping --------------------------------------------------------------------

class _Uses:
    def __init__(self, graph: Graph):
        self.producer: dict[str, Node] = {}
        self.readers: dict[str, list[Node]] = {}
        self.outputs = {v.name for v in graph.outputs}
        for n in graph.nodes:
            for v in n.outputs:
                self.producer[v.name] = n
            for v in n.inputs:
                if v is not None:
                    self.readers.setdefault(v.name, []).append(n)
            for name in free_names_of_subgraphs(n):
                self.readers.setdefault(name, []).append(n)

    def only_reader(self, v: Value, reader: Node) -> Optional[str]:
        """Why `v` is read by something other than one use in `reader` (None if it is not)."""
        if v.name in self.outputs:
            return f"'{v.name}' is a graph output"
        readers = self.readers.get(v.name, [])
        others = sorted({r.name for r in readers if r is not reader})
        if others:
            return f"'{v.name}' is also read by {', '.join(repr(o) for o in others)}"
        if len(readers) > 1:
            return f"'{v.name}' is read {len(readers)} times by '{reader.name}'"
        return None


def _rank(v: Value) -> Optional[int]:
    return None if v.shape is None else len(v.shape)


def _axis(concat: Node) -> Optional[int]:
    rank = _rank(concat.outputs[0])
    if rank is None:
        rank = next((_rank(v) for v in concat.inputs if v is not None and _rank(v) is not None), None)
    if rank is None:
        return None
    axis = int(concat.attrs["axis"])
    return axis + rank if axis < 0 else axis


# ---- branches: a mergeable producer and the per-channel layers after it ----------------------

@dataclass
class _Branch:
    base: Node
    tail: list[Node]
    # Per tail layer: the index of the operand that carries the running value.
    running: list[int]
    channels: int


def _running_operand(node: Node) -> Optional[int]:
    """Which operand of a per-channel tail layer carries the branch's value (None: not a tail layer)."""
    if node.domain or len(node.outputs) != 1 or not node.inputs or node.inputs[0] is None:
        return None
    if node.op_type in TAIL_UNARY and len(node.inputs) == 1:
        return 0
    if node.op_type == "Clip":
        return 0 if all(v is None or v.is_const for v in node.inputs[1:]) else None
    if node.op_type in TAIL_BINARY and len(node.inputs) == 2 and node.inputs[1] is not None:
        consts = [v.is_const for v in node.inputs]
        if consts == [False, True]:
            return 0
        if consts == [True, False]:
            return 1
    return None


def _trace(v: Value, reader: Node, uses: _Uses) -> tuple[Optional[_Branch], Optional[str]]:
    """The branch producing `v` (read by `reader`); or why it cannot be merged; (None, None) when
    no mergeable layer produces it."""
    tail: list[Node] = []
    running: list[int] = []
    problem: Optional[str] = None
    cur, cur_reader = v, reader
    while True:
        node = uses.producer.get(cur.name)
        if node is None:
            return None, None
        # Only reported if a mergeable layer is found: a branch value read elsewhere must stay.
        problem = problem or uses.only_reader(cur, cur_reader)
        if not node.domain and node.op_type in SIBLING_MERGES and len(node.outputs) == 1 and node.inputs \
                and node.inputs[0] is not None:
            break
        index = _running_operand(node)
        if index is None:
            return None, None
        tail.insert(0, node)
        running.insert(0, index)
        cur, cur_reader = node.inputs[index], node
    rule = SIBLING_MERGES[node.op_type]
    problem = problem or rule.check(node)
    if problem:
        return None, problem
    return _Branch(node, tail, running, rule.channels(node)), None


def _per_channel(c: np.ndarray, rank: int, axis: int, channels: int) -> Optional[np.ndarray]:
    """A constant operand as one value per channel ([channels]), or None if it varies along
    another axis or would raise the output's rank."""
    if c.ndim > rank:
        return None
    lead = rank - c.ndim
    for d in range(c.ndim):
        if lead + d != axis and c.shape[d] != 1:
            return None
    along = c.shape[axis - lead] if axis >= lead else 1
    if along not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,))


def _compatible(a: _Branch, b: _Branch, rank: int, axis: int) -> Optional[str]:
    """Why branches a and b cannot be one layer (None if they can)."""
    if a.base.op_type != b.base.op_type:
        return f"produced by different ops ({a.base.op_type} '{a.base.name}', {b.base.op_type} '{b.base.name}')"
    rule = SIBLING_MERGES[a.base.op_type]
    channel_axis = rule.channel_axis(rank)
    if axis != channel_axis:
        return f"concat axis {axis} is not the output-channel axis {channel_axis} of {rule.op}"
    xa, xb = a.base.inputs[0], b.base.inputs[0]
    if xa is not xb:
        return f"'{a.base.name}' and '{b.base.name}' read different inputs ('{xa.name}', '{xb.name}')"
    sa, sb = rule.signature(a.base), rule.signature(b.base)
    differ = [f"{k}: {sa[k]} vs {sb[k]}" for k in sa if sa[k] != sb.get(k)]
    if differ:
        return f"attributes of '{a.base.name}' and '{b.base.name}' differ ({'; '.join(differ)})"
    if a.base.outputs[0].dtype != b.base.outputs[0].dtype:
        return f"'{a.base.name}' and '{b.base.name}' have different output dtypes"
    if len(a.tail) != len(b.tail) or any(x.op_type != y.op_type for x, y in zip(a.tail, b.tail)):
        ops_a = "->".join(n.op_type for n in [a.base] + a.tail)
        ops_b = "->".join(n.op_type for n in [b.base] + b.tail)
        return f"branches differ ({ops_a} vs {ops_b})"
    for x, y, rx, ry in zip(a.tail, b.tail, a.running, b.running):
        if x.attrs != y.attrs:
            return f"attributes of '{x.name}' and '{y.name}' differ"
        if rx != ry or len(x.inputs) != len(y.inputs):
            return f"'{x.name}' and '{y.name}' read the branch value as different operands"
        reason = _tail_operands_problem(x, y, rx, (a.channels, b.channels), rank, axis)
        if reason:
            return reason
    return None


def _tail_operands_problem(x: Node, y: Node, running: int, channels: tuple[int, int], rank: int,
                           axis: int) -> Optional[str]:
    if x.op_type == "Clip":
        for vx, vy in zip(x.inputs[1:], y.inputs[1:]):
            if (vx is None) != (vy is None) or (vx is not None and not np.array_equal(vx.const, vy.const)):
                return f"clip bounds of '{x.name}' and '{y.name}' differ"
        return None
    if x.op_type in TAIL_UNARY:
        return None
    cx, cy = x.inputs[1 - running], y.inputs[1 - running]
    if cx.const.dtype != cy.const.dtype:
        return f"constants '{cx.name}' and '{cy.name}' have different dtypes"
    for node, c, n in ((x, cx, channels[0]), (y, cy, channels[1])):
        if _per_channel(c.const, rank, axis, n) is None:
            return f"constant '{c.name}' {list(c.const.shape)} of '{node.name}' is not one value per channel"
    return None


def _merge_run(run: list[_Branch], out: Value, rank: int, axis: int, rw: Rewriter) -> list[Node]:
    """One layer (plus its merged tail) computing the concatenation of the run's branches into `out`."""
    rule = SIBLING_MERGES[run[0].base.op_type]
    bases = [b.base for b in run]
    first = bases[0]
    weights, attrs = rule.merge(bases, rw)
    steps = len(run[0].tail)
    value = out if steps == 0 else rw.value(f"{first.outputs[0].name}_merged")
    merged = [rw.node(first.op_type, [first.inputs[0]] + weights, [value], attrs,
                      name=f"{first.name}_merged", like=first)]
    infer_node(merged[-1])
    for k in range(steps):
        layer = run[0].tail[k]
        running = run[0].running[k]
        inputs = list(layer.inputs)
        inputs[running] = value
        if layer.op_type in TAIL_BINARY:
            per = [_per_channel(b.tail[k].inputs[1 - running].const, rank, axis, b.channels) for b in run]
            c = np.concatenate(per).reshape((-1,) + (1,) * (rank - 1 - axis))
            inputs[1 - running] = rw.const(c.astype(layer.inputs[1 - running].const.dtype, copy=False),
                                           f"{layer.name}_merged_c")
        value = out if k == steps - 1 else rw.value(f"{layer.outputs[0].name}_merged")
        merged.append(rw.node(layer.op_type, inputs, [value], dict(layer.attrs), name=f"{layer.name}_merged",
                              like=layer))
        infer_node(merged[-1])
    return merged


# ---- the pass ------------------------------------------------------------------------------

def eliminate_concats(graph: Graph, ctx: PassContext) -> Graph:
    taken = graph.defined_names() | {n.name for n in graph.nodes}
    rw = Rewriter(graph, taken)
    dropped_weights: set[str] = set()
    for concat in [n for n in graph.nodes if n.op_type == "Concat" and not n.domain]:
        if concat not in graph.nodes:
            continue
        _flatten(graph, concat, ctx)
        _drop_empty(concat, ctx)
        _merge_siblings(graph, concat, rw, ctx, dropped_weights)
        if concat in graph.nodes and len([v for v in concat.inputs if v is not None]) == 1:
            _remove_single(graph, concat, ctx)
    if dropped_weights:
        _drop_unused_constants(graph, dropped_weights)
    return graph


def _flatten(graph: Graph, concat: Node, ctx: PassContext) -> None:
    # Concat(a, Concat(b, c), d) -> Concat(a, b, c, d)
    axis = _axis(concat)
    if axis is None:
        return
    uses = _Uses(graph)
    inputs: list[Optional[Value]] = []
    for v in concat.inputs:
        inner = uses.producer.get(v.name) if v is not None else None
        if (inner is not None and inner.op_type == "Concat" and not inner.domain and _axis(inner) == axis
                and uses.only_reader(v, concat) is None):
            inputs.extend(inner.inputs)
            graph.nodes.remove(inner)
            ctx.rewrote(FLATTEN, concat.name, f"inlined '{inner.name}'")
        else:
            inputs.append(v)
    concat.inputs = inputs


def _drop_empty(concat: Node, ctx: PassContext) -> None:
    # Concat(a, empty, b) -> Concat(a, b)
    axis = _axis(concat)
    if axis is None:
        return
    def empty(v: Optional[Value]) -> bool:
        return v is not None and v.shape is not None and len(v.shape) > axis and v.shape[axis] == 0
    kept = [v for v in concat.inputs if v is not None and not empty(v)]
    if kept and len(kept) < len([v for v in concat.inputs if v is not None]):
        for v in concat.inputs:
            if empty(v):
                ctx.rewrote(DROP_EMPTY, concat.name, f"dropped empty input '{v.name}'")
        concat.inputs = kept


def _merge_siblings(graph: Graph, concat: Node, rw: Rewriter, ctx: PassContext, dropped_weights: set[str]) -> None:
    axis = _axis(concat)
    rank = _rank(concat.outputs[0])
    if axis is None or rank is None:
        ctx.declined(MERGE, concat.name, "the rank of the concat's output is not known")
        return
    uses = _Uses(graph)
    inputs = [v for v in concat.inputs if v is not None]
    branches: list[Optional[_Branch]] = []
    for i, v in enumerate(inputs):
        branch, reason = _trace(v, concat, uses)
        if reason:
            ctx.declined(MERGE, concat.name, f"input {i}: {reason}")
        branches.append(branch)
    # Maximal runs of adjacent compatible branches.
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(inputs) + 1):
        joined = False
        if i < len(inputs) and branches[i - 1] is not None and branches[i] is not None:
            reason = _compatible(branches[i - 1], branches[i], rank, axis)
            if reason:
                ctx.declined(MERGE, concat.name, f"inputs {i - 1} and {i}: {reason}")
            joined = reason is None
        if not joined:
            if i - start >= 2:
                runs.append((start, i))
            start = i
    if not runs:
        return
    whole = runs == [(0, len(inputs))]
    new_inputs: list[Value] = []
    added: list[Node] = []
    removed: set[int] = set()
    pos = 0
    for start, end in runs:
        new_inputs.extend(inputs[pos:start])
        run = [b for b in branches[start:end] if b is not None]
        out = concat.outputs[0] if whole else rw.value(f"{concat.outputs[0].name}_part")
        added.extend(_merge_run(run, out, rank, axis, rw))
        new_inputs.append(out)
        for b in run:
            for n in [b.base] + b.tail:
                removed.add(id(n))
                dropped_weights.update(v.name for v in n.inputs if v is not None and v.is_const)
        pos = end
        ctx.rewrote(MERGE, concat.name, f"{len(run)} x {'->'.join(n.op_type for n in [run[0].base] + run[0].tail)}"
                                        f" -> one {run[0].base.op_type} of {sum(b.channels for b in run)} channels")
    new_inputs.extend(inputs[pos:])
    # The merged layers take the concat's place (all they read is defined before it).
    at = graph.nodes.index(concat)
    before = [n for n in graph.nodes[:at] if id(n) not in removed]
    after = [n for n in graph.nodes[at + 1:] if id(n) not in removed]
    if whole:
        graph.nodes = before + added + after
    else:
        concat.inputs = new_inputs
        graph.nodes = before + added + [concat] + after


def _replace_reads(graph: Graph, old: Value, new: Value) -> None:
    for n in graph.nodes:
        n.inputs = [new if v is old else v for v in n.inputs]


def _remove_single(graph: Graph, concat: Node, ctx: PassContext) -> None:
    # Concat(a) -> a
    x = next(v for v in concat.inputs if v is not None)
    y = concat.outputs[0]
    uses = _Uses(graph)
    captured = {name for n in graph.nodes for name in free_names_of_subgraphs(n)}
    outputs = {v.name for v in graph.outputs}
    if y.name in captured:
        ctx.declined(SINGLE, concat.name, f"'{y.name}' is read inside a subgraph by name")
        return
    if y.name not in outputs:
        graph.nodes.remove(concat)
        _replace_reads(graph, y, x)
        ctx.rewrote(SINGLE, concat.name, f"readers of '{y.name}' now read '{x.name}'")
        return
    # y is a graph output: its name must survive, so x's producer writes y directly.
    producer = uses.producer.get(x.name)
    if producer is None or x.name in outputs or x.name in captured:
        what = "a graph output" if x.name in outputs else "read inside a subgraph" if x.name in captured \
            else "a graph input or constant"
        ctx.declined(SINGLE, concat.name, f"'{y.name}' is a graph output and its input '{x.name}' is {what}")
        return
    graph.nodes.remove(concat)
    producer.outputs = [y if v is x else v for v in producer.outputs]
    y.type = x.type if x.type is not None else y.type
    _replace_reads(graph, x, y)
    ctx.rewrote(SINGLE, concat.name, f"'{producer.name}' now writes the graph output '{y.name}'")


def _drop_unused_constants(graph: Graph, names: set[str]) -> None:
    """Remove the replaced layers' weights that nothing reads any more."""
    read = {v.name for n in graph.nodes for v in n.inputs if v is not None}
    read |= {name for n in graph.nodes for name in free_names_of_subgraphs(n)}
    read |= {v.name for v in graph.outputs}
    graph.initializers = [v for v in graph.initializers if v.name not in names or v.name in read]
