"""Constant folding: compute at build time what depends only on constants.

A node whose inputs are all constants is run once, on the CPU, with its op's torch
reference (the same code the engine's reference tactic runs), and its outputs become
initializers. Shape arithmetic folds too: any small integer value that the symbolic shape
analysis (symbolic_dims.py) works out to numbers is a constant even though what it is
computed from is not: `Shape` of a value whose dims are known, and `Gather`/`Slice`/`Concat`/
`Equal`/`Where`... that use only the known dims of a partly symbolic shape. So the exporter
chains ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` become constant shapes wherever
the dims they read are static. Where such a Reshape target is known except for entries that
are the reshaped tensor's own dims at the same position, those entries become 0 ("copy this
dim"), so the target is constant even with a dynamic batch. Types are re-inferred node by
node as folding proceeds, and the pass runs to a fixed point, so a folded shape makes
downstream shapes known. Each round first gives the dims the analysis works out their names
(symbolic_dims.write_dim_names), so the passes after see equal dims as equal.

Only the top-level graph is folded; subgraphs (If/Loop/Scan bodies) are run whole when
their node's inputs and captures are all constant. Graph outputs keep being produced by
a node (an Identity of the folded constant) so the engine's output tensors stay.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..ir import DType, Graph, NameScope, Node, TensorType, Value, is_static, numpy_to_torch, torch_to_numpy
from ..ir.shape import numel
from ..ops import RunContext, get_op
from ..ops.infer import infer_node
from .context import PassContext
from .noops import all_names
from .symbolic_dims import ShapeAnalysis, analyze_shapes, write_dim_names

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
        # Folding below only turns values into equal constants, so this stays true for the round.
        shapes = analyze_shapes(self.graph, self.ctx.dim_bounds)
        write_dim_names(self.graph, shapes, self.ctx)
        kept: list[Node] = []
        for node in self.graph.nodes:
            infer_node(node)
            if _is_kept_output_copy(node, output_names):
                kept.append(node)
                continue
            if self._reshape_copying_dims(node, shapes):
                infer_node(node)  # a constant target: the output shape becomes known for the nodes after
                changed = True
            arrays = self._shape_arithmetic(node, shapes)
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
    def _shape_arithmetic(self, node: Node, shapes: ShapeAnalysis) -> Optional[list[np.ndarray]]:
        """The output of shape arithmetic on values that are not all constants (else
        `_evaluate` runs the node) when the analysis found it to be numbers; else None."""
        if len(node.outputs) != 1 or all(v is None or v.const is not None for v in node.inputs):
            return None
        array = shapes.known_array(node.outputs[0])
        return None if array is None else [array]

    def _reshape_copying_dims(self, node: Node, shapes: ShapeAnalysis) -> bool:
        """Reshape(x, [.., d_i, ..]) where d_i is x's own dim i: the target becomes the constant
        [.., 0, ..] ("copy dim i"), so the chain computing it folds away."""
        if node.op_type != "Reshape" or node.domain or node.attrs.get("allowzero", 0) or len(node.inputs) < 2:
            return False
        x, target = node.inputs[0], node.inputs[1]
        if x is None or target is None or target.const is not None or target.name in shapes.scalars:
            return False
        entries, dims = shapes.value(target), shapes.shape(x)
        if entries is None or dims is None:
            return False
        new = []
        for i, e in enumerate(entries):
            if isinstance(e, int) and not isinstance(e, bool):
                new.append(e)
            elif e is not None and not isinstance(e, bool) and i < len(dims) and e == dims[i]:
                new.append(0)
            else:
                return False
        const = Value(self._unique(f"{target.name}_copying_dims"), const=np.array(new, dtype=np.int64))
        self.graph.initializers.append(const)
        node.inputs = [x, const, *node.inputs[2:]]
        self.ctx.rewrote(COPY_DIMS_RULE, node.name, f"target {[str(e) for e in entries]} -> {new}")
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
