"""Subgraphs that older exporters write as primitive ops, recognised as the one ONNX op they are.

LayerNormalization (with its scale and shift), Gelu (erf and tanh forms), Swish (SiLU),
HardSwish and Softmax. Each rule's check compares the chain's constants with the ones the
op implies (relative tolerance CONSTANT_RTOL) and names the difference when they disagree.

LayerNorm and softmax are DAGs, not trees: x - mean feeds both the variance and the
numerator, exp(x) both the sum and the division. The engine matches trees whose inner values
have one reader, so the shared value is a `Var` and the check asks a `GraphLookup` how it
was produced. The nodes that produced it are not part of the match: once the rewrite has
left them unread, `recognize_patterns` removes them.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import numpy as np

from ....ir import DType, Graph, Node, Value
from ....ops import get_op
from ..rule import Const, Match, Pat, Rewriter, Rule, Var

# How far a chain's constant may be from the exact one (exporters print 0.7071068, 1.4142135...).
CONSTANT_RTOL = 1e-4

FLOAT_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)

# ONNX opsets that introduced the ops these rules create: a new node gets at least that one.
_SINCE = {"LayerNormalization": 17, "Gelu": 20, "Swish": 24, "HardSwish": 14, "Softmax": 13}


# ---- what checks and rewrites ask about the graph -------------------------------------------

class GraphLookup:
    """Producers and readers of values in a graph that the rules are rewriting.

    A rule's check sees only its Match; a DAG pattern looks up here how a shared value was
    made. The index is rebuilt whenever `graph.nodes` is another list than last time (the
    engine assigns a new list on every rewrite); holding that list keeps its identity unique.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self._nodes: Optional[list[Node]] = None
        self._producer: dict[str, Node] = {}
        self._readers: dict[str, list[Node]] = {}

    def _refresh(self) -> None:
        if self._nodes is self.graph.nodes:
            return
        self._nodes = self.graph.nodes
        self._producer = {v.name: n for n in self._nodes for v in n.outputs}
        self._readers = {}
        for n in self._nodes:
            names = {v.name for v in n.inputs if v is not None}
            for sub in n.subgraphs():
                names |= sub.free_names()
            for name in names:
                self._readers.setdefault(name, []).append(n)

    def producer(self, value: Optional[Value]) -> Optional[Node]:
        if value is None:
            return None
        self._refresh()
        return self._producer.get(value.name)

    def readers(self, value: Value) -> list[Node]:
        """The distinct nodes reading `value` (graph outputs not included)."""
        self._refresh()
        return list(self._readers.get(value.name, []))


def rank_of(value: Value) -> Optional[int]:
    return None if value.shape is None else len(value.shape)


def float_reason(value: Value, what: str) -> Optional[str]:
    if value.dtype is None:
        return f"the dtype of {what} '{value.name}' is unknown"
    if value.dtype not in FLOAT_DTYPES:
        return f"{what} '{value.name}' is {value.dtype.short}, not a floating-point tensor"
    return None


def scalar(value: Value, result_rank: Optional[int], what: str) -> Union[float, str]:
    """The number a broadcast scalar constant holds, or the reason it is not one."""
    if value.const is None:
        return f"{what} '{value.name}' is not a constant"
    c = np.asarray(value.const)
    if c.size != 1:
        return f"{what} '{value.name}' is not a scalar (shape {list(c.shape)})"
    if c.ndim > (0 if result_rank is None else result_rank):
        # [[c]] times a vector is a matrix: the fused op would drop that broadcast.
        return f"{what} '{value.name}' has rank {c.ndim}, more than the result's ({result_rank})"
    if c.dtype.kind not in "fiu":
        return f"{what} '{value.name}' is {c.dtype}, not a number"
    return float(c.reshape(()))


def near(actual: float, expected: float) -> bool:
    return abs(actual - expected) <= CONSTANT_RTOL * abs(expected)


def constant_reason(value: Value, result_rank: Optional[int], what: str, expected: float) -> Optional[str]:
    """None if `value` is a scalar constant within CONSTANT_RTOL of `expected`, else why not."""
    got = scalar(value, result_rank, what)
    if isinstance(got, str):
        return got
    if not near(got, expected):
        return f"{what} is {got:.8g}, not {expected:.8g}"
    return None


def reduce_axes(node: Node, rank: int) -> Union[list[int], str]:
    """The sorted axes a Reduce* node reduces (keeping them), or the reason they are not known.

    Axes are an attribute before opset 18 (13 for ReduceSum) and an input after; absent or
    empty axes reduce every dim unless noop_with_empty_axes is set."""
    where = f"{node.op_type} '{node.name}'"
    axes: Any = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        if node.inputs[1].const is None:
            return f"{where} takes its axes from a computed tensor"
        axes = [int(a) for a in np.asarray(node.inputs[1].const).reshape(-1)]
    if not node.attrs.get("keepdims", 1):
        return f"{where} drops the reduced axes (keepdims=0)"
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return f"{where} reduces no axis (noop_with_empty_axes)"
        return list(range(rank))
    normalized = sorted({int(a) + rank if int(a) < 0 else int(a) for a in axes})
    if normalized[0] < 0 or normalized[-1] >= rank:
        return f"{where}: axes {list(axes)} are out of range for rank {rank}"
    return normalized


def new_node(rw: Rewriter, op_type: str, inputs: Sequence[Optional[Value]], outputs: Sequence[Value],
             attrs: dict[str, Any], like: Node, domain: str = "", opset: int = 0) -> Node:
    """A replacement node whose attributes are completed as the importer completes them
    (Op.normalize at the node's opset: at least the one that introduced the op), named for
    the value it produces (the replaced nodes' names are taken)."""
    opset = opset or max(like.opset, _SINCE.get(op_type, 1))
    attrs = get_op(op_type, domain).normalize(dict(attrs), opset)
    return rw.node(op_type, inputs, outputs, attrs, name=f"{outputs[0].name}/{op_type}", domain=domain,
                   opset=opset)


# ---- LayerNormalization ------------------------------------------------------------------------

def _centered_parts(lookup: GraphLookup, m: Match) -> Union[tuple[Value, Node], str]:
    """(x, the ReduceMean node of its mean) for the x - mean the match normalizes, or why not."""
    if "d" in m.values:
        sub = lookup.producer(m.value("d"))
        if sub is None or sub.op_type != "Sub" or sub.domain:
            return f"the normalized value '{m.value('d').name}' is not x - ReduceMean(x)"
        x, mean = sub.inputs[0], sub.inputs[1]
    else:
        x, mean = m.value("x"), m.value("mean")
    mean_node = lookup.producer(mean)
    if mean_node is None or mean_node.op_type != "ReduceMean" or mean_node.inputs[0] is not x:
        return f"the subtracted '{mean.name}' is not ReduceMean('{x.name}')"
    return x, mean_node


def _layer_norm_parts(lookup: GraphLookup, m: Match) -> Union[tuple[Value, int, float], str]:
    """(x, axis, epsilon) of a matched primitive layer norm, or the reason it is not one."""
    parts = _centered_parts(lookup, m)
    if isinstance(parts, str):
        return parts
    x, mean_node = parts
    reason = float_reason(x, "input")
    if reason:
        return reason
    rank = rank_of(x)
    if rank is None:
        return f"the rank of '{x.name}' is unknown"
    mean_axes = reduce_axes(mean_node, rank)
    if isinstance(mean_axes, str):
        return mean_axes
    var_axes = reduce_axes(m.node("var"), rank)
    if isinstance(var_axes, str):
        return var_axes
    if mean_axes != var_axes:
        return f"the mean reduces axes {mean_axes} but the variance axes {var_axes}"
    if mean_axes != list(range(rank - len(mean_axes), rank)):
        return (f"normalizes axes {mean_axes} of a rank-{rank} tensor: LayerNormalization normalizes only "
                f"the trailing axes")
    if m.node("square").op_type == "Pow":
        reason = constant_reason(m.value("two"), rank, "the variance's exponent", 2.0)
        if reason:
            return reason
    if "one" in m.values:
        reason = constant_reason(m.value("one"), rank, "the numerator of 1/sqrt(var + eps)", 1.0)
        if reason:
            return reason
    eps = scalar(m.value("eps"), rank, "epsilon")
    if isinstance(eps, str):
        return eps
    if not eps >= 0:
        return f"epsilon is {eps:g}, not a nonnegative number"
    axis = mean_axes[0]
    if any(not isinstance(d, int) for d in x.shape[axis:]):
        return f"the normalized dims {list(x.shape[axis:])} of '{x.name}' are not static"
    return x, axis, eps


def _stash_type(x: Value) -> int:
    # Statistics in float32, as LayerNormalization's default; float64 graphs keep float64.
    return (DType.FLOAT64 if x.dtype == DType.FLOAT64 else DType.FLOAT32).value


def _layer_norm_rule(lookup: GraphLookup, pattern: Pat) -> Rule:
    def check(m: Match) -> Optional[str]:
        parts = _layer_norm_parts(lookup, m)
        return parts if isinstance(parts, str) else None

    def rewrite(m: Match, rw: Rewriter) -> list[Node]:
        x, axis, eps = _layer_norm_parts(lookup, m)
        scale = rw.const(np.ones(tuple(x.shape[axis:]), dtype=x.dtype.numpy), f"{m.root.outputs[0].name}_scale")
        return [new_node(rw, "LayerNormalization", [x, scale], m.root.outputs,
                         {"axis": axis, "epsilon": eps, "stash_type": _stash_type(x)}, like=m.root)]

    return Rule("layer_norm", pattern, rewrite, check)


def _layer_norm_patterns() -> list[Pat]:
    """(x - mean) / sqrt(mean((x - mean)²) + eps) in the forms exporters write it."""
    def tails(numerator: Pat | Var, square: Pat) -> list[Pat]:
        var = Pat("ReduceMean", [square], name="var")
        denominator = Pat("Sqrt", [Pat("Add", [var, Const("eps")], commutative=True)])
        return [
            Pat("Div", [numerator, denominator]),
            Pat("Mul", [numerator, Pat("Reciprocal", [denominator])], commutative=True),
            Pat("Mul", [numerator, Pat("Div", [Const("one"), denominator])], commutative=True),
        ]

    shared = Var("d")  # one x - mean node read by the square and the numerator (PyTorch)
    fresh = Pat("Sub", [Var("x"), Var("mean")])  # x - mean computed twice (TF)
    return (tails(shared, Pat("Pow", [shared, Const("two")], name="square"))
            + tails(shared, Pat("Mul", [shared, shared], name="square"))
            + tails(fresh, Pat("Pow", [Pat("Sub", [Var("x"), Var("mean")]), Const("two")], name="square")))


def _normalized_broadcast(c: np.ndarray, x: Value, axis: int) -> Union[np.ndarray, str]:
    """`c` as an array of the normalized shape, if multiplying/adding it after the layer norm
    broadcasts only over the normalized axes; else the reason."""
    rank = len(x.shape)
    if c.ndim > rank:
        return f"the constant of rank {c.ndim} would broadcast the rank-{rank} layer norm to a higher rank"
    full = c.reshape((1,) * (rank - c.ndim) + c.shape)
    if any(d != 1 for d in full.shape[:axis]):
        return (f"the constant of shape {list(c.shape)} varies along axes the layer norm (axis {axis}) "
                f"does not normalize")
    normalized = tuple(x.shape[axis:])
    if any(d not in (1, n) for d, n in zip(full.shape[axis:], normalized)):
        return f"the constant of shape {list(c.shape)} does not broadcast to the normalized shape {list(normalized)}"
    return np.broadcast_to(full.reshape(full.shape[axis:]), normalized)


def _affine_parts(m: Match) -> Union[tuple[Node, Value, int, np.ndarray, Optional[np.ndarray], np.ndarray], str]:
    """(layer norm node, x, axis, its scale, its bias or None, the constant as normalized shape)."""
    ln = m.node("ln")
    x = ln.inputs[0]
    if len(ln.outputs) != 1:
        return f"layer norm '{ln.name}' also returns its mean and inverse std"
    if x.shape is None:
        return f"the rank of '{x.name}' is unknown"
    rank = len(x.shape)
    axis = int(ln.attrs["axis"]) + (rank if int(ln.attrs["axis"]) < 0 else 0)
    if any(not isinstance(d, int) for d in x.shape[axis:]):
        # The normalized dims decide the broadcast; only static ones can be checked.
        return f"the normalized dims {list(x.shape[axis:])} of '{x.name}' are not static"
    scale = ln.inputs[1].const
    if scale is None:
        return f"the layer norm's scale '{ln.inputs[1].name}' is not a constant"
    bias_value = ln.inputs[2] if len(ln.inputs) > 2 else None
    if bias_value is not None and bias_value.const is None:
        return f"the layer norm's bias '{bias_value.name}' is not a constant"
    c = _normalized_broadcast(np.asarray(m.const("c")), x, axis)
    if isinstance(c, str):
        return c
    if m.value("c").dtype != x.dtype:
        return f"the constant is {m.value('c').dtype.short}, the layer norm {x.dtype.short}"
    bias = None if bias_value is None else bias_value.const
    return ln, x, axis, scale, bias, c


def _check_affine(m: Match) -> Optional[str]:
    parts = _affine_parts(m)
    return parts if isinstance(parts, str) else None


def _fold_scale(m: Match, rw: Rewriter) -> list[Node]:
    ln, x, axis, scale, bias, g = _affine_parts(m)
    shape, name = tuple(x.shape[axis:]), m.root.outputs[0].name
    inputs = [x, rw.const((np.broadcast_to(scale, shape) * g).astype(x.dtype.numpy), f"{name}_scale")]
    if bias is not None:
        inputs.append(rw.const((np.broadcast_to(bias, shape) * g).astype(x.dtype.numpy), f"{name}_bias"))
    return [new_node(rw, "LayerNormalization", inputs, m.root.outputs, ln.attrs, like=ln, opset=ln.opset)]


def _fold_bias(m: Match, rw: Rewriter) -> list[Node]:
    ln, x, axis, scale, bias, c = _affine_parts(m)
    shape = tuple(x.shape[axis:])
    total = c if bias is None else np.broadcast_to(bias, shape) + c
    inputs = [x, ln.inputs[1], rw.const(np.asarray(total, dtype=x.dtype.numpy), f"{m.root.outputs[0].name}_bias")]
    return [new_node(rw, "LayerNormalization", inputs, m.root.outputs, ln.attrs, like=ln, opset=ln.opset)]


_LN = Pat("LayerNormalization", [Var("x"), Var("scale")], name="ln")

LAYER_NORM_AFFINE_RULES = [
    # Mul(LayerNormalization(x, s, b), g) -> LayerNormalization(x, s·g, b·g)
    Rule("layer_norm_scale", Pat("Mul", [_LN, Const("c")], commutative=True), _fold_scale, _check_affine),
    # Add(LayerNormalization(x, s, b), c) -> LayerNormalization(x, s, b + c)
    Rule("layer_norm_bias", Pat("Add", [_LN, Const("c")], commutative=True), _fold_bias, _check_affine),
]


# ---- GELU --------------------------------------------------------------------------------------

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_CUBIC = 0.044715


def _gelu_outer(inner: Pat) -> list[Pat]:
    """½·x·inner in the three groupings exporters write."""
    return [
        Pat("Mul", [Pat("Mul", [Var("x"), inner], commutative=True), Const("half")], commutative=True),  # PyTorch
        Pat("Mul", [Pat("Mul", [Var("x"), Const("half")], commutative=True), inner], commutative=True),  # HF
        Pat("Mul", [Var("x"), Pat("Mul", [inner, Const("half")], commutative=True)], commutative=True),  # TF
    ]


def _gelu_erf_patterns() -> list[Pat]:
    patterns = []
    for arg in (Pat("Div", [Var("x"), Const("root")], name="erf_arg"),
                Pat("Mul", [Var("x"), Const("root")], name="erf_arg", commutative=True)):
        patterns += _gelu_outer(Pat("Add", [Pat("Erf", [arg]), Const("one")], commutative=True))
    return patterns


def _gelu_tanh_patterns() -> list[Pat]:
    patterns = []
    for cube in (Pat("Pow", [Var("x"), Const("three")], name="cube"),
                 Pat("Mul", [Var("x"), Pat("Mul", [Var("x"), Var("x")])], name="cube", commutative=True)):
        inner = Pat("Mul", [Const("beta"),
                            Pat("Add", [Var("x"), Pat("Mul", [Const("kappa"), cube], commutative=True)],
                                commutative=True)], commutative=True)
        patterns += _gelu_outer(Pat("Add", [Pat("Tanh", [inner]), Const("one")], commutative=True))
    return patterns


def _gelu_common_reason(m: Match) -> Optional[str]:
    x = m.value("x")
    reason = float_reason(x, "input")
    if reason:
        return reason
    rank = rank_of(x)
    return (constant_reason(m.value("half"), rank, "the outer factor", 0.5)
            or constant_reason(m.value("one"), rank, "the added constant", 1.0))


def _check_gelu_erf(m: Match) -> Optional[str]:
    reason = _gelu_common_reason(m)
    if reason:
        return reason
    rank = rank_of(m.value("x"))
    root = scalar(m.value("root"), rank, "erf's scale")
    if isinstance(root, str):
        return root
    factor = (1.0 / root if root else math.inf) if m.node("erf_arg").op_type == "Div" else root
    if not near(factor, _SQRT_HALF):
        return f"erf's argument is x·{factor:.8g}, not x/sqrt(2) (x·{_SQRT_HALF:.8g})"
    return None


def _check_gelu_tanh(m: Match) -> Optional[str]:
    reason = _gelu_common_reason(m)
    if reason:
        return reason
    rank = rank_of(m.value("x"))
    if m.node("cube").op_type == "Pow":
        reason = constant_reason(m.value("three"), rank, "the cubic term's exponent", 3.0)
    return (reason or constant_reason(m.value("beta"), rank, "tanh's scale", _SQRT_2_OVER_PI)
            or constant_reason(m.value("kappa"), rank, "the cubic coefficient", _GELU_TANH_CUBIC))


def _gelu(approximate: str):
    def rewrite(m: Match, rw: Rewriter) -> list[Node]:
        return [new_node(rw, "Gelu", [m.value("x")], m.root.outputs, {"approximate": approximate}, like=m.root)]
    return rewrite


GELU_RULES = (
    # ½·x·(1 + Erf(x/√2)) -> Gelu(x)
    [Rule("gelu_erf", p, _gelu("none"), _check_gelu_erf) for p in _gelu_erf_patterns()]
    # ½·x·(1 + Tanh(√(2/π)·(x + 0.044715·x³))) -> Gelu(x, approximate="tanh")
    + [Rule("gelu_tanh", p, _gelu("tanh"), _check_gelu_tanh) for p in _gelu_tanh_patterns()]
)


# ---- SiLU / Swish and HardSwish ----------------------------------------------------------------

def _check_float_x(m: Match) -> Optional[str]:
    return float_reason(m.value("x"), "input")


def _check_swish_alpha(m: Match) -> Optional[str]:
    alpha = scalar(m.value("alpha"), rank_of(m.value("x")), "sigmoid's scale")
    return alpha if isinstance(alpha, str) else _check_float_x(m)


def _swish(m: Match, rw: Rewriter) -> list[Node]:
    alpha = 1.0 if "alpha" not in m.values else scalar(m.value("alpha"), rank_of(m.value("x")), "alpha")
    return [new_node(rw, "Swish", [m.value("x")], m.root.outputs, {"alpha": alpha}, like=m.root)]


def _hard_swish(m: Match, rw: Rewriter) -> list[Node]:
    return [new_node(rw, "HardSwish", [m.value("x")], m.root.outputs, {}, like=m.root)]


def _check_hard_sigmoid(m: Match) -> Optional[str]:
    hs = m.node("hard_sigmoid")
    alpha, beta = float(hs.attrs["alpha"]), float(hs.attrs["beta"])
    if not (near(alpha, 1 / 6) and near(beta, 0.5)):
        return f"HardSigmoid has alpha={alpha:g}, beta={beta:g}; HardSwish needs 1/6 and 0.5"
    return _check_float_x(m)


def _clip_bound(clip: Node, index: int, attr: str) -> Optional[float]:
    if len(clip.inputs) > index and clip.inputs[index] is not None:
        c = clip.inputs[index].const
        return None if c is None or np.asarray(c).size != 1 else float(np.asarray(c).reshape(()))
    value = clip.attrs.get(attr)
    return None if value is None else float(value)


def _check_relu6_hard_swish(m: Match) -> Optional[str]:
    reason = _check_float_x(m)
    if reason:
        return reason
    rank = rank_of(m.value("x"))
    clip = m.node("relu6")
    low, high = _clip_bound(clip, 1, "min"), _clip_bound(clip, 2, "max")
    if low != 0.0 or high is None or not near(high, 6.0):
        return f"Clip '{clip.name}' clamps to [{low}, {high}], not [0, 6]"
    reason = constant_reason(m.value("three"), rank, "the added constant", 3.0)
    if reason:
        return reason
    divisor = m.node("sixth")
    return constant_reason(m.value("six"), rank, "the divisor" if divisor.op_type == "Div" else "the factor",
                           6.0 if divisor.op_type == "Div" else 1 / 6)


def _hard_swish_relu6_patterns() -> list[Pat]:
    relu6 = Pat("Clip", [Pat("Add", [Var("x"), Const("three")], commutative=True)], name="relu6")
    patterns = []
    for op, commutative in (("Div", False), ("Mul", True)):
        # (x·relu6(x + 3)) / 6
        patterns.append(Pat(op, [Pat("Mul", [Var("x"), relu6], commutative=True), Const("six")], name="sixth",
                            commutative=commutative))
        # x·(relu6(x + 3) / 6)
        patterns.append(Pat("Mul", [Var("x"), Pat(op, [relu6, Const("six")], name="sixth",
                                                   commutative=commutative)], commutative=True))
    return patterns


ACTIVATION_RULES = [
    # Mul(x, Sigmoid(x)) -> Swish(x)
    Rule("silu", Pat("Mul", [Var("x"), Pat("Sigmoid", [Var("x")])], commutative=True), _swish, _check_float_x),
    # Mul(x, Sigmoid(Mul(x, a))) -> Swish(x, alpha=a)
    Rule("swish", Pat("Mul", [Var("x"), Pat("Sigmoid", [Pat("Mul", [Var("x"), Var("alpha")], commutative=True)])],
                      commutative=True), _swish, _check_swish_alpha),
    # Mul(x, HardSigmoid(x, 1/6, ½)) -> HardSwish(x)
    Rule("hard_swish", Pat("Mul", [Var("x"), Pat("HardSigmoid", [Var("x")], name="hard_sigmoid")], commutative=True),
         _hard_swish, _check_hard_sigmoid),
] + [
    # x·Clip(x + 3, 0, 6)/6 -> HardSwish(x)
    Rule("hard_swish", p, _hard_swish, _check_relu6_hard_swish) for p in _hard_swish_relu6_patterns()
]


# ---- Softmax -----------------------------------------------------------------------------------

def _softmax_parts(lookup: GraphLookup, m: Match) -> Union[tuple[Value, int], str]:
    """(the tensor softmaxed, the axis) of exp(y) / ReduceSum(exp(y)), where y = x - ReduceMax(x)
    gives x (the max only keeps exp from overflowing), or the reason it is not a softmax."""
    e = m.value("e")
    exp = lookup.producer(e)
    if exp is None or exp.op_type != "Exp" or exp.domain:
        return f"the numerator '{e.name}' is not an Exp"
    y = exp.inputs[0]
    reason = float_reason(y, "input")
    if reason:
        return reason
    rank = rank_of(y)
    if rank is None or rank == 0:
        return f"the rank of '{y.name}' is {'unknown' if rank is None else 0}"
    axes = reduce_axes(m.node("sum"), rank)
    if isinstance(axes, str):
        return axes
    if len(axes) != 1:
        return f"ReduceSum sums axes {axes}; Softmax normalizes one axis"
    x = y
    sub = lookup.producer(y)
    if sub is not None and sub.op_type == "Sub" and not sub.domain:
        row_max = lookup.producer(sub.inputs[1])
        if (row_max is not None and row_max.op_type == "ReduceMax" and row_max.inputs[0] is sub.inputs[0]
                and reduce_axes(row_max, rank) == axes):
            x = sub.inputs[0]
    return x, axes[0]


def _softmax_rule(lookup: GraphLookup) -> Rule:
    def check(m: Match) -> Optional[str]:
        parts = _softmax_parts(lookup, m)
        return parts if isinstance(parts, str) else None

    def rewrite(m: Match, rw: Rewriter) -> list[Node]:
        x, axis = _softmax_parts(lookup, m)
        return [new_node(rw, "Softmax", [x], m.root.outputs, {"axis": axis}, like=m.root)]

    # Div(Exp(x - ReduceMax(x)), ReduceSum(Exp(x - ReduceMax(x)))) -> Softmax(x); also without the max
    return Rule("softmax", Pat("Div", [Var("e"), Pat("ReduceSum", [Var("e")], name="sum")]), rewrite, check)


def pattern_rules(lookup: GraphLookup) -> list[Rule]:
    """Every rule of this module; the DAG ones (layer norm, softmax) read the graph through `lookup`."""
    return ([_layer_norm_rule(lookup, p) for p in _layer_norm_patterns()] + LAYER_NORM_AFFINE_RULES
            + GELU_RULES + ACTIVATION_RULES + [_softmax_rule(lookup)])
