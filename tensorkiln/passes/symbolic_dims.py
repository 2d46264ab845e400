"""Name the dims that an exporter's shape arithmetic leaves unnamed.

A model exported with dynamic axes computes many of its shapes at run time: Hugging Face
BERT builds its attention mask from ``Range(0, Shape(x)[1])``, reshapes it to a target
``Concat``-ed from shape entries, and expands it to ``Where(Equal(t, -1), 1, t)``. Plain type
inference sees only that those inputs are not constants, so every dim downstream gets a fresh
name (the exporter's ``unk__N``); then the attention output does not provably have the
residual's shape, and the fusions that need equal shapes (SkipLayerNormalization,
EmbedLayerNormalization) decline.

This pass evaluates the shape arithmetic symbolically, as ONNX Runtime's symbolic shape
inference does: every dim is a sympy expression over the graph inputs' dim symbols, and the
small integer tensors computed from shapes (the values of Shape, Gather, Concat, Equal,
Where...) carry symbolic entries. Reshape, Expand, Range, Slice, ConstantOfShape and Tile read
those values for their output dims; broadcasting takes the larger of two dims (the only
result a valid broadcast can have), so ``max(min(seq, 512), seq)`` simplifies to ``seq``.
Ops without a rule here use their own type inference on the symbolic dims.

Where a value's dim comes out as a graph input's dim symbol or a number, and its type had no
name or only an invented one (``unk__N``, or none), the type takes it. An invented name that
equals such a dim is replaced everywhere it appears. Later passes then see equal dims as equal.
A graph with no symbolic input dims is left alone.

fold_constants runs the analysis in each of its rounds: it folds the shape values found to be
numbers and names the dims (write_dim_names). `name_symbolic_dims` is the naming on its own.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence, Union

import numpy as np
import sympy

from ..ir import DType, Graph, Node, TensorType, Value
from ..ir.shape import Dim, numel
from ..ops import get_op
from ..ops._shape_common import slice_bounds
from ..ops.constant_of_shape import fill_value
from ..ops.elementwise import Binary, Variadic
from ..ops.registry import InferContext
from ..ops.shape import shape_range
from ..ops.where import Where
from .context import PassContext

NAME_RULE = "name_symbolic_dims"

# Shape values longer than this are data, not shape arithmetic.
_MAX_VALUE_ELEMENTS = 64
_INVENTED_PREFIX = "unk__"

Expr = Union[int, sympy.Expr]
# One entry of a small integer tensor: a number, a symbolic expression, a truth value, or unknown.
Entry = Union[int, bool, sympy.Expr, None]
SymShape = Optional[tuple[Expr, ...]]


@functools.lru_cache(maxsize=None)
def _symbol(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, integer=True, nonnegative=True)


def _plain(e: Any) -> Any:
    """sympy numbers and truth values as Python ones; other expressions unchanged."""
    if isinstance(e, sympy.Integer):
        return int(e)
    if e is sympy.true:
        return True
    if e is sympy.false:
        return False
    return e


@functools.lru_cache(maxsize=4096)
def _max(a: Expr, b: Expr) -> Expr:
    if a == b or b == 1:
        return a
    if a == 1:
        return b
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return _plain(sympy.Max(a, b))


def _broadcast(shapes: Sequence[SymShape]) -> SymShape:
    """The broadcast of several shapes: a valid broadcast's dim is the largest of the dims."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dim: Expr = 1
        for s in shapes:
            j = len(s) - rank + i
            if j >= 0:
                dim = _max(dim, s[j])
        out.append(dim)
    return tuple(out)


def _product(dims: Sequence[Expr]) -> Expr:
    total: Expr = 1
    for d in dims:
        total = total * d
    return _plain(sympy.expand(total)) if isinstance(total, sympy.Expr) else total


def _is_integral(e: Expr) -> bool:
    return isinstance(e, int) or (isinstance(e, sympy.Expr) and e.is_integer is True)


def _nonnegative(e: Entry) -> bool:
    if isinstance(e, bool) or e is None:
        return False
    return e >= 0 if isinstance(e, int) else e.is_nonnegative is True


class ShapeAnalysis:
    """Symbolic shapes of every top-level value, and symbolic entries of the small integer ones.
    Build it with `analyze_shapes`."""

    def __init__(self, graph: Graph, bounds: dict[str, int]):
        self.graph = graph
        # The largest size of each input dim symbol, from the optimization profiles.
        self.bounds = bounds
        self.shapes: dict[str, SymShape] = {}
        self.values: dict[str, tuple[Entry, ...]] = {}
        self.scalars: set[str] = set()
        # Invented names (exporters' unk__N) proven equal to an expression.
        self.aliases: dict[str, Expr] = {}
        self.input_symbols: set[str] = set()
        self._fresh = 0
        self._encoded: dict[str, Expr] = {}

    # -- conversions between type dims and expressions ------------------------------------------
    def fresh(self) -> sympy.Symbol:
        self._fresh += 1
        return _symbol(f"?{self._fresh}")

    def from_dim(self, d: Dim) -> Expr:
        if isinstance(d, int):
            return d
        if d is None:
            return self.fresh()
        if d in self._encoded:
            return self._encoded[d]
        return self.aliases.get(d, _symbol(d))

    def to_dim(self, e: Expr) -> Dim:
        """An expression as a type dim for an op's own inference: numbers stay numbers, other
        expressions become a name that decodes back to them."""
        if isinstance(e, int):
            return e
        name = str(e)
        self._encoded[name] = e
        return name

    def is_fresh(self, e: Expr) -> bool:
        return isinstance(e, sympy.Symbol) and e.name.startswith("?")

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> None:
        for v in self.graph.inputs:
            if isinstance(v.type, TensorType) and v.type.shape is not None:
                self.input_symbols |= {d for d in v.type.shape if isinstance(d, str)}
                self.shapes[v.name] = tuple(self.from_dim(d) for d in v.type.shape)
        for v in self.graph.initializers:
            self._constant(v)
        for node in self.graph.nodes:
            self._node(node)

    def _constant(self, v: Value) -> None:
        array = np.asarray(v.const)
        self.shapes[v.name] = tuple(int(d) for d in array.shape)
        if array.ndim <= 1 and array.size <= _MAX_VALUE_ELEMENTS and array.dtype.kind in "iub":
            self.values[v.name] = tuple(bool(x) if array.dtype.kind == "b" else int(x) for x in array.reshape(-1))
            if array.ndim == 0:
                self.scalars.add(v.name)

    def shape(self, v: Optional[Value]) -> SymShape:
        if v is None:
            return None
        if v.name in self.shapes:
            return self.shapes[v.name]
        if isinstance(v.type, TensorType) and v.type.shape is not None:
            return tuple(self.from_dim(d) for d in v.type.shape)
        return None

    def value(self, v: Optional[Value]) -> Optional[tuple[Entry, ...]]:
        return None if v is None else self.values.get(v.name)

    def known_array(self, v: Value) -> Optional[np.ndarray]:
        """The value of `v` as an array of its dtype when every entry is a number or truth value."""
        entries = self.values.get(v.name)
        if entries is None or not isinstance(v.type, TensorType) or \
                any(e is None or isinstance(e, sympy.Basic) for e in entries):
            return None
        array = np.array(entries, dtype=v.type.dtype.numpy)
        return array.reshape(()) if v.name in self.scalars else array

    def _node(self, node: Node) -> None:
        outs = node.outputs
        if not outs:
            return
        shapes: list[SymShape] = [None] * len(outs)
        if not node.domain and next(node.subgraphs(), None) is None:
            try:
                shapes = self._output_shapes(node)
            except Exception:  # noqa: BLE001 - what the analysis cannot work out stays as its type says
                shapes = [None] * len(outs)
        for v, s in zip(outs, shapes):
            self.shapes[v.name] = self._merge_declared(v, s)
        if not node.domain and len(outs) == 1 and _small_int(outs[0], self.shapes[outs[0].name]):
            try:
                entries = self._output_value(node)
            except Exception:  # noqa: BLE001 - as above: the value stays unknown
                entries = None
            if entries is not None:
                self.values[outs[0].name] = entries[0]
                if entries[1]:
                    self.scalars.add(outs[0].name)

    def _merge_declared(self, v: Value, computed: SymShape) -> SymShape:
        """The computed dims where they say more than the value's type; the type's where not.
        An invented type name meeting a computed dim becomes an alias for it."""
        declared = v.type.shape if isinstance(v.type, TensorType) else None
        if computed is None or (declared is not None and len(declared) != len(computed)):
            return None if declared is None else tuple(self.from_dim(d) for d in declared)
        if declared is None:
            return computed
        out = []
        for d, e in zip(declared, computed):
            if isinstance(d, int):
                out.append(d)
            elif self.is_fresh(e) or d in self.input_symbols:
                out.append(self.from_dim(d))  # nothing computed, or an input's own dim: the type's name
            else:
                if isinstance(d, str) and d not in self.aliases and d not in self._encoded:
                    self.aliases[d] = e
                out.append(e)
        return tuple(out)

    # -- output dims ---------------------------------------------------------------------------
    def _output_shapes(self, node: Node) -> list[SymShape]:
        op_type, ins = node.op_type, node.inputs
        op = get_op(op_type, node.domain)
        if op is None:
            return [None] * len(node.outputs)
        if isinstance(op, (Binary, Variadic, Where)):
            return [_broadcast([self.shape(v) for v in ins if v is not None])]
        if op_type == "Reshape" and node.attrs.get("shape") is None:
            return [self._reshape(node)]
        if op_type == "Expand":
            target = self.value(ins[1])
            if target is not None:
                x = self.shape(ins[0])
                return [_broadcast([x, tuple(self._entry_dim(e) for e in target)])]
        if op_type == "ConstantOfShape":
            target = self.value(ins[0])
            if target is not None:
                return [tuple(self._entry_dim(e) for e in target)]
        if op_type == "Range":
            return [self._range(node)]
        if op_type == "Tile":
            x, repeats = self.shape(ins[0]), self.value(ins[1])
            if x is not None and repeats is not None and len(repeats) == len(x):
                return [tuple(_product([d, self._entry_dim(r)]) for d, r in zip(x, repeats))]
        if op_type == "Slice" and node.opset >= 10:
            return [self._slice(node)]
        if op_type == "Concat":
            return [self._concat(node)]
        if op_type == "Flatten":
            x = self.shape(ins[0])
            if x is not None:
                a = node.attrs.get("axis", 1)
                a = a + len(x) if a < 0 else a
                return [(_product(x[:a]), _product(x[a:]))]
        return self._by_op_inference(node, op)

    def _entry_dim(self, e: Entry) -> Expr:
        return e if _is_integral(e) and not isinstance(e, bool) else self.fresh()

    def _by_op_inference(self, node: Node, op: Any) -> list[SymShape]:
        types = []
        for v in node.inputs:
            s = self.shape(v)
            if v is None or not isinstance(v.type, TensorType):
                types.append(None if v is None else v.type)
            else:
                types.append(TensorType(v.type.dtype, None if s is None else tuple(self.to_dim(d) for d in s)))
        result = op.infer(InferContext(node=node, input_types=types, attrs=node.attrs))
        return [tuple(self.from_dim(d) for d in t.shape) if isinstance(t, TensorType) and t.shape is not None
                else None for t in result]

    def _reshape(self, node: Node) -> SymShape:
        x, target = self.shape(node.inputs[0]), self.value(node.inputs[1])
        if target is None:
            return None
        allowzero = node.attrs.get("allowzero", 0)
        dims: list[Optional[Expr]] = []
        for i, e in enumerate(target):
            if e == 0 and not allowzero and not isinstance(e, bool):
                dims.append(x[i] if x is not None and i < len(x) else self.fresh())
            elif e == -1 and not isinstance(e, bool):
                dims.append(None)
            else:
                dims.append(self._entry_dim(e))
        if None in dims:
            rest = self.fresh()
            if x is not None:
                known = _product([d for d in dims if d is not None])
                quotient = _plain(sympy.cancel(sympy.sympify(_product(x)) / known)) if known != 0 else None
                if quotient is not None and _is_integral(quotient):
                    rest = quotient
            dims[dims.index(None)] = rest
        return tuple(dims)

    def _range(self, node: Node) -> SymShape:
        start, limit, delta = (self.value(v) for v in node.inputs[:3])
        if start is None or limit is None or delta is None:
            return None
        start, limit, delta = start[0], limit[0], delta[0]
        if not (_is_integral(start) and _is_integral(limit) and isinstance(delta, int)) or delta == 0 \
                or any(isinstance(x, bool) for x in (start, limit, delta)):
            return None
        span = limit - start
        length = -(-span // delta) if isinstance(span, int) else _plain(sympy.ceiling(span / sympy.Integer(delta)))
        return (_max_zero(length),)

    def _slice(self, node: Node) -> SymShape:
        x = self.shape(node.inputs[0])
        if x is None:
            return None
        starts, ends = self.value(node.inputs[1]), self.value(node.inputs[2])
        axes = self.value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
        steps = self.value(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
        if starts is None or ends is None or len(starts) != len(ends):
            return None
        if len(node.inputs) > 3 and node.inputs[3] is not None and axes is None:
            return None
        if len(node.inputs) > 4 and node.inputs[4] is not None and steps is None:
            return None
        axes = axes if axes is not None else tuple(range(len(starts)))
        steps = steps if steps is not None else (1,) * len(starts)
        out: list[Expr] = list(x)
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if not isinstance(axis, int) or isinstance(axis, bool) or not isinstance(step, int) or step == 0:
                return None
            axis = axis + len(x) if axis < 0 else axis
            out[axis] = self._sliced_length(x[axis], start, end, step)
        return tuple(out)

    def _sliced_length(self, dim: Expr, start: Entry, end: Entry, step: int) -> Expr:
        if isinstance(dim, int) and isinstance(start, int) and isinstance(end, int):
            s, e = slice_bounds(start, end, step, dim)
            return max(0, -(-(e - s) // step)) if step > 0 else max(0, -(-(s - e) // -step))
        # Forward slices from a known start to an end past or at a symbolic position: the
        # length is min(end, dim) - start, which sympy keeps symbolic.
        if step != 1 or not isinstance(start, int) or start < 0 or not _nonnegative(end):
            return self.fresh()
        stop = dim if isinstance(end, int) and end >= (1 << 62) else self.min(end, dim)
        return _max_zero(_plain(sympy.sympify(stop) - self.min(start, dim)))

    def min(self, a: Expr, b: Expr) -> Expr:
        """min(a, b), where a dim the profiles bound below a number is the smaller."""
        for x, y in ((a, b), (b, a)):
            if isinstance(x, sympy.Symbol) and isinstance(y, int) and self.bounds.get(x.name, y + 1) <= y:
                return x
        return _min(a, b)

    def _concat(self, node: Node) -> SymShape:
        shapes = [self.shape(v) for v in node.inputs if v is not None]
        if not shapes or any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1:
            return None
        axis = node.attrs.get("axis", 0)
        axis = axis + len(shapes[0]) if axis < 0 else axis
        out = list(shapes[0])
        total: Expr = 0
        for s in shapes:
            total = total + s[axis]
        out[axis] = _plain(sympy.expand(total)) if isinstance(total, sympy.Expr) else total
        for i in range(len(out)):
            if i != axis:
                # The inputs agree on every other dim; a number or a named dim among them wins.
                out[i] = next((s[i] for s in shapes if not self.is_fresh(s[i])), out[i])
        return tuple(out)

    # -- values of small integer tensors ---------------------------------------------------------
    def _output_value(self, node: Node) -> Optional[tuple[tuple[Entry, ...], bool]]:
        op_type, ins = node.op_type, node.inputs
        first = ins[0] if ins else None
        if op_type == "Shape":
            x = self.shape(first)
            if x is None:
                return None
            start, end = shape_range(len(x), node.attrs.get("start", 0), node.attrs.get("end"))
            return tuple(x[start:end]), False
        if op_type == "Size":
            x = self.shape(first)
            return None if x is None else ((_product(x),), True)
        if op_type == "Identity" or op_type == "Cast" and node.outputs[0].type.dtype.is_integer:
            same = self._same_value(first)
            return None if same is None or any(isinstance(e, bool) for e in same[0]) else same
        if op_type == "ConstantOfShape":
            shape = self.shapes[node.outputs[0].name]
            fill = fill_value(node.attrs).reshape(-1)[0].item()
            return (fill,) * numel(shape), not shape
        data = self.value(first)
        if data is None:
            return None
        scalar = first.name in self.scalars
        if op_type == "Gather" and not scalar and node.attrs.get("axis", 0) in (0, -1):
            indices = self.value(ins[1])
            if indices is None or any(not isinstance(i, int) or isinstance(i, bool) for i in indices):
                return None
            picked = tuple(data[i] for i in indices)  # IndexError: out of range, left to run time
            return picked, ins[1].name in self.scalars
        if op_type == "Unsqueeze" and scalar:
            return data, False
        if op_type == "Squeeze" and len(data) == 1 and not scalar:
            return data, True
        if op_type == "Slice" and not scalar and node.opset >= 10:
            return self._sliced_value(node, data)
        if op_type == "Concat" and node.attrs.get("axis") in (0, -1):
            parts = [self.value(v) for v in ins]
            if any(p is None for p in parts):
                return None
            return tuple(e for p in parts for e in p), False
        if op_type in _ELEMENTWISE:
            operands = [self.value(v) for v in ins]
            if any(p is None for p in operands):
                return None
            length = max(len(p) for p in operands)
            if any(len(p) not in (1, length) for p in operands):
                return None
            rows = zip(*(p * length if len(p) == 1 else p for p in operands))
            entries = tuple(_ELEMENTWISE[op_type](*row) for row in rows)
            return entries, all(v.name in self.scalars for v in ins)
        return None

    def _same_value(self, v: Optional[Value]) -> Optional[tuple[tuple[Entry, ...], bool]]:
        data = self.value(v)
        return None if data is None else (data, v.name in self.scalars)

    def _sliced_value(self, node: Node, data: tuple[Entry, ...]) -> Optional[tuple[tuple[Entry, ...], bool]]:
        bounds = [self.value(v) if i < len(node.inputs) and (v := node.inputs[i]) is not None else None
                  for i in range(1, 5)]
        starts, ends, axes, steps = bounds
        if starts is None or ends is None or len(starts) != 1 or len(ends) != 1:
            return None
        if axes is not None and axes not in ((0,), (-1,)):
            return None
        step = 1 if steps is None else steps[0]
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in (starts[0], ends[0], step)) or step == 0:
            return None
        s, e = slice_bounds(starts[0], ends[0], step, len(data))
        return tuple(data[s:e:step]) if step > 0 else tuple(data[i] for i in range(s, e, step)), False


def _min(a: Expr, b: Expr) -> Expr:
    if a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return _plain(sympy.Min(a, b))


def _max_zero(e: Expr) -> Expr:
    if isinstance(e, int):
        return max(e, 0)
    return e if e.is_nonnegative is True else _plain(sympy.Max(0, e))


def _small_int(v: Value, shape: SymShape) -> bool:
    """Whether the value is an integer or bool tensor of at most one dim and a few entries."""
    t = v.type
    return (isinstance(t, TensorType) and (t.dtype.is_integer or t.dtype == DType.BOOL) and shape is not None
            and len(shape) <= 1 and all(isinstance(d, int) for d in shape)
            and (not shape or shape[0] <= _MAX_VALUE_ELEMENTS))


def _arith(fn):
    def apply(*xs: Entry) -> Entry:
        if any(x is None or isinstance(x, bool) for x in xs):
            return None
        try:
            return _plain(fn(*xs))
        except (ArithmeticError, TypeError):
            return None
    return apply


def _integer_division(a: Expr, b: Expr) -> Entry:
    if isinstance(a, int) and isinstance(b, int):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    # ONNX integer Div truncates toward zero: floor for a nonnegative quotient.
    if _nonnegative(a) and isinstance(b, int) and b > 0:
        return sympy.floor(sympy.sympify(a) / b)
    return None


def _equal(a: Entry, b: Entry) -> Entry:
    if a is None or b is None:
        return None
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b) if isinstance(a, bool) and isinstance(b, bool) else None
    truth = _plain(sympy.Eq(a, b))
    return truth if isinstance(truth, bool) else None


def _where(cond: Entry, x: Entry, y: Entry) -> Entry:
    if isinstance(cond, bool):
        return x if cond else y
    return x if x == y and x is not None else None


def _not(x: Entry) -> Entry:
    return (not x) if isinstance(x, bool) else None


_ELEMENTWISE = {
    "Add": _arith(lambda a, b: a + b),
    "Sub": _arith(lambda a, b: a - b),
    "Mul": _arith(lambda a, b: a * b),
    "Div": _arith(_integer_division),
    "Max": _arith(_max),
    "Min": _arith(_min),
    "Neg": _arith(lambda a: -a),
    "Equal": _equal,
    "Where": _where,
    "Not": _not,
}


def analyze_shapes(graph: Graph, bounds: dict[str, int]) -> ShapeAnalysis:
    """The symbolic shapes and shape values of the graph's top-level values; `bounds` is the
    largest size of each input dim symbol where the profiles give one."""
    analysis = ShapeAnalysis(graph, bounds)
    analysis.run()
    return analysis


def name_symbolic_dims(graph: Graph, ctx: PassContext) -> Graph:
    """The naming on its own: analyze, then name. The pipeline's fold_constants does both in each
    of its rounds, with the one analysis it folds from."""
    if any(isinstance(v.type, TensorType) and v.type.shape is not None
           and any(isinstance(d, str) for d in v.type.shape) for v in graph.inputs):
        write_dim_names(graph, analyze_shapes(graph, ctx.dim_bounds), ctx)
    return graph


def write_dim_names(graph: Graph, analysis: ShapeAnalysis, ctx: PassContext) -> None:
    """Give each value's unnamed or invented dims the number or input dim `analysis` found."""
    names = analysis.input_symbols
    if not names:
        return  # static inputs: every dim that can be known is a number already
    for node in graph.nodes:
        for v in node.outputs:
            new = _named_shape(v, analysis.shapes.get(v.name), names, analysis.aliases)
            if new is not None:
                ctx.rewrote(NAME_RULE, v.name, f"{TensorType(v.type.dtype, v.type.shape)} -> "
                                               f"{TensorType(v.type.dtype, new)}")
                v.type = TensorType(v.type.dtype, new)


def _named_shape(v: Value, computed: SymShape, names: set[str], aliases: dict[str, Expr]) -> Optional[tuple[Dim, ...]]:
    """The value's type dims with each unnamed or invented one replaced by the number or input
    dim the analysis found for it; None when nothing changes."""
    if not isinstance(v.type, TensorType) or v.type.shape is None:
        return None
    declared = v.type.shape
    if computed is None or len(computed) != len(declared):
        computed = (None,) * len(declared)
    new = []
    for d, e in zip(declared, computed):
        if isinstance(d, int) or (isinstance(d, str) and not d.startswith(_INVENTED_PREFIX)):
            new.append(d)
            continue
        if isinstance(d, str) and d in aliases:
            e = aliases[d]
        if isinstance(e, int):
            new.append(e)
        elif isinstance(e, sympy.Symbol) and e.name in names:
            new.append(e.name)
        else:
            new.append(d)
    new_shape = tuple(new)
    return None if new_shape == declared else new_shape
