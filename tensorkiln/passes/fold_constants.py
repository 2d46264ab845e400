"""Constant folding: compute at build time what depends only on constants.

A node whose inputs are all constants is run once, on the CPU, with its op's torch
reference (the same code the engine's reference tactic runs), and its outputs become
initializers. Shape arithmetic folds too: `Shape` of a value whose dims are known is a
constant even though the value itself is not, and `Gather`/`Slice` that pick only the
known dims of a partly symbolic shape fold as well, so the exporter chains
``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` become constant shapes wherever the
dims they read are static. Where such a Reshape target is known except for entries that
are the reshaped tensor's own symbolic dims at the same position, those entries become 0
("copy this dim"), so the target is constant even with a dynamic batch. Types are
re-inferred node by node as folding proceeds, and the pass runs to a fixed point, so a
folded shape makes downstream shapes known.

Only the top-level graph is folded; subgraphs (If/Loop/Scan bodies) are run whole when
their node's inputs and captures are all constant. Graph outputs keep being produced by
a node (an Identity of the folded constant) so the engine's output tensors stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..ir import DType, Graph, NameScope, Node, TensorType, Value, is_static, numpy_to_torch, torch_to_numpy
from ..ir.shape import Dim, numel
from ..ops import RunContext, get_op
from ..ops._shape_common import slice_bounds
from ..ops.infer import infer_node
from ..ops.shape import shape_range
from .context import PassContext
from .noops import all_names

# Folded outputs larger than this stay computed at run time: a small expression that
# expands into a huge constant (ConstantOfShape, Tile, Expand) would bloat the engine file.
FOLD_SIZE_CAP_BYTES = 64 << 20

# Q/DQ pairs on weights are what the precision passes read to run layers in int8/fp8;
# folding DequantizeLinear(int8 weight) into a float weight would erase that.
_KEPT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

_MAX_ROUNDS = 20
_CPU = torch.device("cpu")

FOLD_RULE = "constant_fold"
SHAPE_RULE = "shape_fold"
COPY_DIMS_RULE = "reshape_copy_dims"


@dataclass(frozen=True)
class _ShapeInts:
    """The entries of an int64 shape value: ints where known, the dim's symbol (str) or None
    where not. `scalar` for a 0-d value (one picked dim)."""

    dims: tuple[Dim, ...]
    scalar: bool


def fold_constants(graph: Graph, ctx: PassContext) -> Graph:
    folder = _Folder(graph, ctx)
    for _ in range(_MAX_ROUNDS):
        if not folder.run_round():
            break
    return graph


class _Folder:
    def __init__(self, graph: Graph, ctx: PassContext):
        self.graph = graph
        self.ctx = ctx
        self.names = NameScope(all_names(graph))
        self.declined: set[tuple[str, str]] = set()

    # -- one sweep over the nodes, in order ----------------------------------------------------
    def run_round(self) -> bool:
        changed = False
        output_names = {v.name for v in self.graph.outputs}
        # Int64 values computed from `Shape` whose entries are only partly known.
        shape_ints: dict[str, _ShapeInts] = {}
        kept: list[Node] = []
        for node in self.graph.nodes:
            infer_node(node)
            if _is_kept_output_copy(node, output_names):
                kept.append(node)
                continue
            if self._reshape_copying_dims(node, shape_ints):
                infer_node(node)  # a constant target: the output shape becomes known for the nodes after
                changed = True
            arrays = self._shape_arithmetic(node, shape_ints)
            rule = SHAPE_RULE
            if arrays is None:
                arrays = self._evaluate(node)
                rule = FOLD_RULE
            if arrays is None:
                kept.append(node)
                continue
            kept.extend(self._replace_by_constants(node, arrays, output_names))
            self.ctx.rewrote(rule, node.name, f"{node.op_type} -> constant")
            changed = True
        self.graph.nodes = kept
        return changed

    def _decline(self, node: Node, reason: str) -> None:
        key = (node.name, reason)
        if key not in self.declined:
            self.declined.add(key)
            self.ctx.declined(FOLD_RULE, node.name, reason)

    # -- shapes of partly symbolic values ------------------------------------------------------
    def _shape_arithmetic(self, node: Node, known: dict[str, "_ShapeInts"]) -> Optional[list[np.ndarray]]:
        """Fold Shape/Size of values with known dims, and the shape arithmetic on partly known
        shapes (Gather, Slice, Unsqueeze, Squeeze, Concat) whose result is fully known.
        Records partly known int64 results in `known`; returns the folded arrays or None."""
        if node.domain or not node.outputs or not node.inputs or node.inputs[0] is None:
            return None
        x = node.inputs[0]
        result: Optional[_ShapeInts] = None
        if node.op_type == "Shape":
            if x.const is not None or x.shape is None:
                return None
            start, end = shape_range(len(x.shape), node.attrs.get("start", 0), node.attrs.get("end"))
            result = _ShapeInts(tuple(x.shape[start:end]), scalar=False)
        elif node.op_type == "Size":
            if x.const is not None or not is_static(x.shape):
                return None
            return [np.array(numel(x.shape), dtype=np.int64)]
        elif node.op_type == "Gather" and x.name in known and not known[x.name].scalar:
            result = _gather_ints(node, known[x.name].dims)
        elif node.op_type == "Slice" and x.name in known and not known[x.name].scalar:
            dims = _slice_vector(node, known[x.name].dims)
            result = None if dims is None else _ShapeInts(dims, scalar=False)
        elif node.op_type == "Unsqueeze" and x.name in known and known[x.name].scalar:
            axes = _axes_of(node)
            if axes is not None and axes in ([0], [-1]):
                result = _ShapeInts(known[x.name].dims, scalar=False)
        elif node.op_type == "Squeeze" and x.name in known and len(known[x.name].dims) == 1 \
                and not known[x.name].scalar:
            axes = _axes_of(node)
            if axes is None or axes in ([0], [-1]):
                result = _ShapeInts(known[x.name].dims, scalar=True)
        elif node.op_type == "Concat" and node.attrs.get("axis") in (0, -1):
            result = _concat_ints(node, known)
        if result is None:
            return None
        if all(isinstance(d, int) for d in result.dims):
            array = np.array(result.dims, dtype=np.int64)
            return [array.reshape(()) if result.scalar else array]
        known[node.outputs[0].name] = result
        return None

    def _reshape_copying_dims(self, node: Node, known: dict[str, "_ShapeInts"]) -> bool:
        """Reshape(x, [.., d_i, ..]) where d_i is x's own dim i (same symbol): the target
        becomes the constant [.., 0, ..] ("copy dim i"), so the chain computing it folds away."""
        if node.op_type != "Reshape" or node.domain or node.attrs.get("allowzero", 0) or len(node.inputs) < 2:
            return False
        x, target = node.inputs[0], node.inputs[1]
        if x is None or target is None or target.name not in known or x.shape is None:
            return False
        entries = known[target.name]
        if entries.scalar:
            return False
        new = []
        for i, d in enumerate(entries.dims):
            if isinstance(d, int):
                new.append(d)
            elif isinstance(d, str) and i < len(x.shape) and x.shape[i] == d:
                new.append(0)
            else:
                return False
        const = Value(self._unique(f"{target.name}_copying_dims"), const=np.array(new, dtype=np.int64))
        self.graph.initializers.append(const)
        node.inputs = [x, const, *node.inputs[2:]]
        self.ctx.rewrote(COPY_DIMS_RULE, node.name, f"target {list(entries.dims)} -> {new}")
        return True

    # -- running a node on constants -----------------------------------------------------------
    def _evaluate(self, node: Node) -> Optional[list[np.ndarray]]:
        if any(v is not None and v.const is None for v in node.inputs):
            return None
        captured = self._captured_constants(node)
        if captured is None:
            return None
        op = get_op(node.op_type, node.domain)
        if op is None:
            return None
        reason = self._why_not(node)
        if reason:
            self._decline(node, reason)
            return None
        expected = _static_bytes(node.outputs)
        if expected is not None and expected > FOLD_SIZE_CAP_BYTES:
            self._decline(node, f"outputs would take {expected} bytes (cap {FOLD_SIZE_CAP_BYTES})")
            return None
        try:
            inputs = [None if v is None else _to_runtime(v.const) for v in node.inputs]
            run_ctx = RunContext(_CPU, lambda g, xs: _run_subgraph(g, xs, captured))
            results = _as_list(op.reference(run_ctx, inputs, node.attrs))
        except Exception as exc:  # noqa: BLE001 - the node stays; the engine reports it if it runs
            self._decline(node, f"its reference failed at build time: {type(exc).__name__}: {exc}")
            return None
        if len(results) < len(node.outputs):
            self._decline(node, f"its reference returned {len(results)} outputs, not {len(node.outputs)}")
            return None
        arrays = []
        for v, r in zip(node.outputs, results):
            array = _to_array(r)
            if array is None:
                kind = "string tensor" if isinstance(r, np.ndarray) else type(r).__name__
                self._decline(node, f"output '{v.name}' is a {kind}, which a constant cannot hold")
                return None
            arrays.append(array)
        total = sum(a.nbytes for a in arrays)
        if total > FOLD_SIZE_CAP_BYTES:
            self._decline(node, f"outputs take {total} bytes (cap {FOLD_SIZE_CAP_BYTES})")
            return None
        return arrays

    def _why_not(self, node: Node) -> Optional[str]:
        for n in [node, *(m for g in node.subgraphs() for m in g.walk())]:
            op = get_op(n.op_type, n.domain)
            if op is None:
                return f"'{n.name}' ({n.op_type}) has no implementation"
            if not op.deterministic:
                return f"{n.op_type} is not deterministic" + ("" if n is node else f" (in a subgraph: '{n.name}')")
            if n.domain == "" and n.op_type in _KEPT_OPS:
                return f"{n.op_type} is kept for the precision passes"
            problem = op.check(n)
            if problem:
                return problem
        return None

    def _captured_constants(self, node: Node) -> Optional[dict[str, Any]]:
        """The constants the node's subgraphs read from this graph, or None if one is not constant."""
        names: set[str] = set()
        for g in node.subgraphs():
            names |= g.free_names()
        if not names:
            return {}
        constants = {v.name: v for v in self.graph.initializers}
        if not names <= constants.keys():
            return None
        return {name: _to_runtime(constants[name].const) for name in names}

    # -- editing the graph ---------------------------------------------------------------------
    def _replace_by_constants(self, node: Node, arrays: Sequence[np.ndarray], output_names: set[str]) -> list[Node]:
        """Turn the node's outputs into initializers (the same Value objects, so every reader,
        subgraphs included, sees the constant). Returns the nodes that take the node's place:
        an Identity per graph output, so outputs stay produced under their names."""
        replacement = []
        for v, array in zip(node.outputs, arrays):
            if v.name in output_names:
                const = Value(self._unique(f"{v.name}_folded"), const=array)
                self.graph.initializers.append(const)
                replacement.append(Node("Identity", [const], [v], name=self._unique(f"{node.name}_folded"),
                                        opset=_default_opset(self.graph)))
            else:
                v.const = array
                v.type = TensorType(DType.from_numpy(array.dtype), tuple(array.shape))
                self.graph.initializers.append(v)
        return replacement

    def _unique(self, base: str) -> str:
        return self.names.unique(base)


def _is_kept_output_copy(node: Node, output_names: set[str]) -> bool:
    # Identity(constant) -> graph output is how a folded output stays produced; folding it
    # again would only recreate it.
    return (node.op_type == "Identity" and not node.domain and node.inputs and node.inputs[0] is not None
            and node.inputs[0].const is not None and node.outputs[0].name in output_names)


def _default_opset(graph: Graph) -> int:
    return graph.opsets.get("", 0) or 13


def _axes_of(node: Node) -> Optional[list[int]]:
    """Squeeze/Unsqueeze axes from the attribute or a constant input; None if not given or not constant."""
    if node.attrs.get("axes") is not None:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].const is not None:
        return [int(a) for a in node.inputs[1].const.reshape(-1)]
    return None


def _gather_ints(node: Node, source: tuple[Dim, ...]) -> Optional[_ShapeInts]:
    if len(node.inputs) < 2 or node.inputs[1] is None or node.inputs[1].const is None:
        return None
    indices = node.inputs[1].const
    if node.attrs.get("axis", 0) not in (0, -1) or indices.dtype.kind not in "iu" or indices.ndim > 1:
        return None
    flat = [int(i) for i in indices.reshape(-1)]
    if any(not -len(source) <= i < len(source) for i in flat):
        return None  # out of range: the reference will report it at run time
    return _ShapeInts(tuple(source[i] for i in flat), scalar=indices.ndim == 0)


def _concat_ints(node: Node, known: dict[str, _ShapeInts]) -> Optional[_ShapeInts]:
    """Concat of 1-D pieces that are partly known shape values or int constants."""
    dims: list[Dim] = []
    partly = False
    for v in node.inputs:
        if v is None:
            return None
        if v.name in known and not known[v.name].scalar:
            dims.extend(known[v.name].dims)
            partly = True
        elif v.const is not None and v.const.ndim == 1 and v.const.dtype == np.int64:
            dims.extend(int(d) for d in v.const)
        else:
            return None
    return _ShapeInts(tuple(dims), scalar=False) if partly else None


def _slice_vector(node: Node, source: tuple[Dim, ...]) -> Optional[tuple[Dim, ...]]:
    """The entries of a 1-D shape vector a Slice with constant bounds keeps, or None."""
    if node.opset < 10 and node.attrs.get("starts") is not None:
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes, steps = node.attrs.get("axes"), None
    else:
        consts = [None if i >= len(node.inputs) or node.inputs[i] is None else node.inputs[i].const
                  for i in range(1, 5)]
        if consts[0] is None or consts[1] is None:
            return None
        if any(i + 1 < len(node.inputs) and node.inputs[i + 1] is not None and consts[i] is None for i in (2, 3)):
            return None
        starts, ends = [int(x) for x in consts[0].reshape(-1)], [int(x) for x in consts[1].reshape(-1)]
        axes = None if consts[2] is None else [int(x) for x in consts[2].reshape(-1)]
        steps = None if consts[3] is None else [int(x) for x in consts[3].reshape(-1)]
    if len(starts) != 1 or len(ends) != 1 or (axes is not None and list(axes) not in ([0], [-1])):
        return None
    step = 1 if steps is None else steps[0]
    if step == 0 or len(steps or [1]) != 1:
        return None
    s, e = slice_bounds(starts[0], ends[0], step, len(source))
    return tuple(source[s:e:step]) if step > 0 else tuple(source[i] for i in range(s, e, step))


def _static_bytes(values: Sequence[Value]) -> Optional[int]:
    """The bytes the values will take if all their types are static, else None."""
    total = 0
    for v in values:
        t = v.type
        if not isinstance(t, TensorType) or not is_static(t.shape):
            return None
        try:
            total += numel(t.shape) * t.dtype.itemsize
        except TypeError:
            return None
    return total


def _to_runtime(array: np.ndarray) -> Any:
    # As the executor hands constants to tactics: torch where torch has the dtype, else numpy.
    if array.dtype == object or not DType.from_numpy(array.dtype).has_torch:
        return array
    return numpy_to_torch(array)


def _as_list(out: Any) -> list[Any]:
    if isinstance(out, (torch.Tensor, np.ndarray)):
        return [out]
    return list(out)


def _to_array(result: Any) -> Optional[np.ndarray]:
    """A reference result as a fresh C-ordered numpy array; None for sequences, optionals
    and strings, which initializers cannot hold."""
    if isinstance(result, torch.Tensor):
        array = torch_to_numpy(result)
    elif isinstance(result, np.ndarray):
        array = result
    else:
        return None
    if array.dtype == object or array.dtype.kind in "US":
        return None
    # A copy: a view would share memory with an input constant (Reshape, Slice).
    return np.array(array, copy=True, order="C")


def _run_subgraph(graph: Graph, inputs: Sequence[Any], outer: dict[str, Any]) -> list[Any]:
    """Run a subgraph with op references on the CPU; captures resolve through `outer`."""
    env = dict(outer)
    for v in graph.initializers:
        env[v.name] = _to_runtime(v.const)
    for v, x in zip(graph.inputs, inputs):
        env[v.name] = x
    run_ctx = RunContext(_CPU, lambda g, xs: _run_subgraph(g, xs, env))
    for node in graph.nodes:
        op = get_op(node.op_type, node.domain)
        if op is None:
            raise RuntimeError(f"'{node.name}' ({node.op_type}) has no implementation")
        args = [None if v is None else env[v.name] for v in node.inputs]
        for v, out in zip(node.outputs, _as_list(op.reference(run_ctx, args, node.attrs))):
            env[v.name] = out
    return [env[v.name] for v in graph.outputs]
