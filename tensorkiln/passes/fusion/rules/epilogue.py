"""Epilogue fusion: a convolution or matrix product absorbs the bias, residual Add and activation after it.

Results are the "tensorkiln"-domain layers FusedConv (Conv / ConvTranspose) and FusedMatMul
(MatMul / Gemm). Fusion grows one step per rule, so every order a network writes is covered by a
few small rules that compose:

    Relu(Add(Conv(x), r))  : Add -> FusedConv(r), then Relu -> FusedConv(r, Relu)           (ResNet)
    Add(Relu(Conv(x)), r)  : Relu -> FusedConv(Relu), then Add -> FusedConv(Relu, r, residual_after_activation=1)
    Relu(Add(MatMul(a, W), b)) with 2-D a : Add -> Gemm, then Relu -> FusedMatMul(Relu)

Activations written as primitives are first rewritten to the one op they compute (Mul(x, Sigmoid(x))
is Swish with alpha 1, i.e. SiLU; Mul(x, HardSigmoid(x, 1/6, 1/2)) is HardSwish; Clip(0, 6), ReLU6,
is Clip itself), so the fusion rules see them as activations. Weights need not be constant here.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from ....ir import DType, Node, TensorType, Value
from ....ops import get_op
from ....ops.fused_conv import DOMAIN, FLT_MAX
from ..rule import Match, Pat, Rewriter, Rule, Var
from .fold_scale_bias import fused_from

_FLOAT_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides", "output_padding",
               "output_shape")

# Ops an epilogue can absorb as its activation (PRelu only with a single slope).
ACTIVATION_OPS = ("Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu", "HardSigmoid",
                  "HardSwish", "Swish", "Gelu", "Mish", "Softplus", "Softsign", "ThresholdedRelu", "PRelu")
_NO_PARAMS = ("Relu", "Sigmoid", "Tanh", "HardSwish", "Mish", "Softplus", "Softsign")
_ONE_PARAM = {"LeakyRelu": 0.01, "Elu": 1.0, "Celu": 1.0, "ThresholdedRelu": 1.0}

Activation = tuple[str, list[float]]


def _bound(node: Node, index: int, attr: str, unbounded: float) -> Union[float, str]:
    if node.opset and node.opset < 11:
        value = node.attrs.get(attr)
        return unbounded if value is None else float(value)
    v = node.inputs[index] if len(node.inputs) > index else None
    if v is None:
        return unbounded
    if v.const is None:
        return f"Clip bound '{v.name}' is not constant"
    return float(np.asarray(v.const).reshape(-1)[0])


def activation_of(node: Node) -> Union[Activation, str]:
    """The epilogue activation (name, parameters) a node computes, or why it cannot be one."""
    op, a = node.op_type, node.attrs
    if op in _NO_PARAMS:
        return op, []
    if op in _ONE_PARAM:
        return op, [float(a.get("alpha", _ONE_PARAM[op]))]
    if op == "Clip":
        low, high = _bound(node, 1, "min", -FLT_MAX), _bound(node, 2, "max", FLT_MAX)
        for b in (low, high):
            if isinstance(b, str):
                return b
        return "Clip", [low, high]
    if op == "Selu":
        return "Selu", [float(a.get("alpha", 1.67326319217681884765625)),
                        float(a.get("gamma", 1.05070102214813232421875))]
    if op == "HardSigmoid":
        return "HardSigmoid", [float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))]
    if op == "Gelu":
        approximate = a.get("approximate", "none")
        if approximate not in ("none", "tanh"):
            return f"Gelu approximate='{approximate}' is not a supported epilogue activation"
        return ("GeluTanh" if approximate == "tanh" else "Gelu"), []
    if op == "Swish":
        alpha = float(a.get("alpha", 1.0))
        return ("Silu", []) if alpha == 1.0 else ("Swish", [alpha])
    if op == "PRelu":
        slope = node.inputs[1] if len(node.inputs) > 1 else None
        if slope is None or slope.const is None:
            return "PRelu slope is not constant"
        if slope.const.size != 1:
            return "PRelu with a per-channel slope is not a supported epilogue activation"
        return "LeakyRelu", [float(slope.const.reshape(-1)[0])]
    return f"{op} is not a supported epilogue activation"


# ---- shapes -----------------------------------------------------------------------------------

def _float_output(node: Node) -> Optional[str]:
    dt = node.outputs[0].dtype
    if dt is None:
        return f"dtype of {node.op_type} '{node.name}' output is unknown"
    if dt not in _FLOAT_DTYPES:
        return f"{node.op_type} '{node.name}' computes {dt.short} tensors (only floating point is fused)"
    return None


def residual_fits(r: Value, out: Value) -> Optional[str]:
    """Why `r` cannot be added into `out` in place (it must broadcast into out's shape without growing it)."""
    if not isinstance(r.type, TensorType) or not isinstance(out.type, TensorType):
        return f"type of '{r.name}' or '{out.name}' is unknown"
    if r.dtype != out.dtype:
        return f"addend '{r.name}' is {r.dtype.short}, the output is {out.dtype.short}"
    rs, os_ = r.shape, out.shape
    if rs is None or os_ is None:
        return f"shape of '{r.name}' or '{out.name}' is unknown"
    if len(rs) > len(os_):
        return f"addend '{r.name}' {list(rs)} has a higher rank than the output {list(os_)}"
    for rd, od in zip(rs, os_[len(os_) - len(rs):]):
        if rd == 1 or (rd is not None and rd == od):
            continue
        return f"addend '{r.name}' {list(rs)} does not broadcast into the output {list(os_)} without growing it"
    return None


def _is_row_bias(c: Value) -> bool:
    """Whether c varies along the last dim only (a bias per output feature)."""
    return c.shape is not None and all(d == 1 for d in c.shape[:-1])


def _rank(v: Optional[Value]) -> Optional[int]:
    return None if v is None or v.shape is None else len(v.shape)


def _input(node: Node, i: int) -> Optional[Value]:
    return node.inputs[i] if len(node.inputs) > i else None


# ---- building the fused layers ------------------------------------------------------------------

def _fused(rw: Rewriter, m: Match, op_type: str, inputs: list[Optional[Value]], attrs: dict) -> Node:
    first = m.matched[0]
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    rw.graph.opsets.setdefault(DOMAIN, 1)
    node = rw.node(op_type, inputs, m.root.outputs, get_op(op_type, DOMAIN).normalize(attrs, 1),
                   name=f"{first.name}+{m.root.name}", domain=DOMAIN, opset=1)
    node.meta["fused_from"] = fused_from(m)
    return node


def _conv_attrs(conv: Node) -> dict:
    if conv.domain == DOMAIN:
        return dict(conv.attrs)
    attrs = {k: conv.attrs[k] for k in _CONV_ATTRS if k in conv.attrs}
    attrs["transposed"] = int(conv.op_type == "ConvTranspose")
    return attrs


def _conv_inputs(conv: Node) -> list[Optional[Value]]:
    return [conv.inputs[0], conv.inputs[1], _input(conv, 2), _input(conv, 3)]


# ---- Conv / ConvTranspose --------------------------------------------------------------------

def _check_conv_activation(m: Match) -> Optional[str]:
    conv = m.node("conv")
    if conv.domain == DOMAIN and conv.attrs.get("activation"):
        return f"FusedConv '{conv.name}' already ends in {conv.attrs['activation']}"
    act = activation_of(m.root)
    return act if isinstance(act, str) else _float_output(conv)


def _rewrite_conv_activation(m: Match, rw: Rewriter) -> list[Node]:
    conv = m.node("conv")
    name, params = activation_of(m.root)
    attrs = _conv_attrs(conv)
    attrs.update(activation=name, activation_params=params, residual_after_activation=0)
    return [_fused(rw, m, "FusedConv", _conv_inputs(conv), attrs)]


def _check_conv_residual(m: Match) -> Optional[str]:
    conv = m.node("conv")
    if _input(conv, 3) is not None:
        return f"FusedConv '{conv.name}' already has a residual input"
    return _float_output(conv) or residual_fits(m.value("r"), conv.outputs[0])


def _rewrite_conv_residual(m: Match, rw: Rewriter) -> list[Node]:
    conv = m.node("conv")
    attrs = _conv_attrs(conv)
    # After an activation already fused: Add(act(conv), r); otherwise act(conv + r) once one is fused.
    attrs["residual_after_activation"] = int(bool(attrs.get("activation")))
    inputs = _conv_inputs(conv)
    inputs[3] = m.value("r")
    return [_fused(rw, m, "FusedConv", inputs, attrs)]


def _check_residual_bias(m: Match) -> Optional[str]:
    conv, down = m.root, m.node("down")
    if conv.attrs.get("residual_after_activation"):
        return "the residual is added after the activation, so its bias cannot join the conv's"
    bd = _input(down, 2)
    if bd is None or bd.const is None:
        return f"Conv '{down.name}' has no constant bias to move"
    b = _input(conv, 2)
    if b is not None and (b.const is None or b.const.shape != bd.const.shape):
        return f"FusedConv '{conv.name}' bias is not a constant of the residual's bias shape"
    return _float_output(down)


def _rewrite_residual_bias(m: Match, rw: Rewriter) -> list[Node]:
    conv, down = m.root, m.node("down")
    bd = down.inputs[2].const
    b = _input(conv, 2)
    total = bd.astype(np.float64) + (0.0 if b is None else b.const.astype(np.float64))
    bias = rw.const(total.astype(bd.dtype), f"{conv.name}.bias")
    plain = rw.node("Conv", down.inputs[:2], down.outputs, dict(down.attrs), like=down)
    fused = rw.node("FusedConv", [conv.inputs[0], conv.inputs[1], bias, conv.inputs[3]], conv.outputs,
                    dict(conv.attrs), domain=DOMAIN, opset=conv.opset, like=conv)
    fused.meta = dict(conv.meta)
    return [plain, fused]


# ---- MatMul / Gemm / FusedMatMul ----------------------------------------------------------------

def _mm_parts(mm: Node) -> tuple[list[Optional[Value]], dict]:
    """(inputs [a, b, bias, residual], attrs) of a MatMul, Gemm or FusedMatMul as a FusedMatMul."""
    if mm.domain == DOMAIN:
        return [mm.inputs[0], mm.inputs[1], _input(mm, 2), _input(mm, 3)], dict(mm.attrs)
    if mm.op_type == "Gemm":
        attrs = {k: mm.attrs[k] for k in ("alpha", "beta", "transA", "transB") if k in mm.attrs}
        return [mm.inputs[0], mm.inputs[1], _input(mm, 2), None], attrs
    return [mm.inputs[0], mm.inputs[1], None, None], {}


def _check_matmul_activation(m: Match) -> Optional[str]:
    mm = m.node("mm")
    if mm.domain == DOMAIN and mm.attrs.get("activation"):
        return f"FusedMatMul '{mm.name}' already ends in {mm.attrs['activation']}"
    act = activation_of(m.root)
    return act if isinstance(act, str) else _float_output(mm)


def _rewrite_matmul_activation(m: Match, rw: Rewriter) -> list[Node]:
    inputs, attrs = _mm_parts(m.node("mm"))
    name, params = activation_of(m.root)
    attrs.update(activation=name, activation_params=params, residual_after_activation=0)
    return [_fused(rw, m, "FusedMatMul", inputs, attrs)]


def _check_matmul_add(m: Match) -> Optional[str]:
    mm = m.node("mm")
    if mm.domain == DOMAIN and _input(mm, 3) is not None:
        return f"FusedMatMul '{mm.name}' already has a residual input"
    return _float_output(mm) or residual_fits(m.value("c"), mm.outputs[0])


def _gemm_of(m: Match, rw: Rewriter, a: Value, b: Value, c: Value, attrs: dict) -> Node:
    root = m.root
    node = rw.node("Gemm", [a, b, c], root.outputs, attrs, name=f"{m.matched[0].name}+{root.name}",
                   like=root)
    node.meta["fused_from"] = fused_from(m)
    return node


def _rewrite_matmul_add(m: Match, rw: Rewriter) -> list[Node]:
    mm, c = m.node("mm"), m.value("c")
    inputs, attrs = _mm_parts(mm)
    a, b = inputs[0], inputs[1]
    if mm.op_type == "MatMul" and _rank(a) == 2 and b.const is not None and b.const.ndim == 2:
        # Add(MatMul(a, W), c) -> Gemm(a, W, c): the standard layer, C broadcast to [M, N] as Gemm allows.
        return [_gemm_of(m, rw, a, b, c, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})]
    bias = inputs[2] if float(attrs.get("beta", 1.0)) != 0.0 else None
    if mm.op_type == "Gemm" and bias is None:
        # Add(Gemm(a, b), c) -> Gemm(a, b, c)
        return [_gemm_of(m, rw, a, b, c, dict(mm.attrs, beta=1.0))]
    if bias is None and not attrs.get("activation") and _is_row_bias(c):
        inputs[2] = c
        attrs["beta"] = 1.0
    else:
        inputs[3] = c
        attrs["residual_after_activation"] = int(bool(attrs.get("activation")))
    return [_fused(rw, m, "FusedMatMul", inputs, attrs)]


# ---- activations written as primitives ------------------------------------------------------

def _check_hard_swish(m: Match) -> Optional[str]:
    hs = m.node("hs")
    alpha, beta = float(hs.attrs.get("alpha", 0.2)), float(hs.attrs.get("beta", 0.5))
    if abs(alpha - 1.0 / 6.0) > 1e-6 or beta != 0.5:
        return f"HardSigmoid(alpha={alpha}, beta={beta}) is not HardSwish's (1/6, 1/2)"
    return None


def _rewrite_silu(m: Match, rw: Rewriter) -> list[Node]:
    node = rw.node("Swish", [m.value("x")], m.root.outputs, {"alpha": 1.0}, like=m.root)
    node.meta["fused_from"] = fused_from(m)
    return [node]


def _rewrite_hard_swish(m: Match, rw: Rewriter) -> list[Node]:
    node = rw.node("HardSwish", [m.value("x")], m.root.outputs, {}, like=m.root)
    node.meta["fused_from"] = fused_from(m)
    return [node]


_CONV = Pat(("Conv", "ConvTranspose"), name="conv")
_FUSED_CONV = Pat("FusedConv", name="conv", domain=DOMAIN)
_FUSED_MATMUL = Pat("FusedMatMul", name="mm", domain=DOMAIN)

EPILOGUE_RULES: list[Rule] = [
    # Mul(x, Sigmoid(x)) -> Swish(x, alpha=1)  (SiLU)
    Rule("silu_from_primitives", Pat("Mul", [Var("x"), Pat("Sigmoid", [Var("x")])], commutative=True),
         _rewrite_silu),
    # Mul(x, HardSigmoid(x, alpha=1/6, beta=1/2)) -> HardSwish(x)
    Rule("hard_swish_from_primitives",
         Pat("Mul", [Var("x"), Pat("HardSigmoid", [Var("x")], name="hs")], commutative=True),
         _rewrite_hard_swish, _check_hard_swish),
    # Act(Conv(x, W, b)) -> FusedConv(x, W, b, activation=Act)
    Rule("conv_activation", Pat(ACTIVATION_OPS, [_CONV]), _rewrite_conv_activation, _check_conv_activation),
    # Add(Conv(x, W, b), r) -> FusedConv(x, W, b, r)  (conv + b + r)
    Rule("conv_residual", Pat("Add", [_CONV, Var("r")], commutative=True), _rewrite_conv_residual,
         _check_conv_residual),
    # Act(FusedConv(x, W, b, r)) -> FusedConv(x, W, b, r, activation=Act)  (act(conv + b + r): ResNet order)
    Rule("fused_conv_activation", Pat(ACTIVATION_OPS, [_FUSED_CONV]), _rewrite_conv_activation,
         _check_conv_activation),
    # Add(FusedConv(x, W, b, activation=Act), r) -> FusedConv(x, W, b, r, activation=Act, residual_after_activation=1)
    Rule("fused_conv_residual", Pat("Add", [_FUSED_CONV, Var("r")], commutative=True), _rewrite_conv_residual,
         _check_conv_residual),
    # FusedConv(x, W, b, Conv(y, Wd, bd)) -> FusedConv(x, W, b + bd, Conv(y, Wd)): act(conv + b + (conv_d + bd))
    # needs the downsample branch's bias added once, inside the fused layer, not as its own pass
    Rule("residual_bias_hoist", Pat("FusedConv", [Var("x"), Var("w"), None, Pat("Conv", name="down")], domain=DOMAIN),
         _rewrite_residual_bias, _check_residual_bias),
    # Add(MatMul(a, W), c) -> Gemm(a, W, c) for 2-D a and constant 2-D W, else FusedMatMul(a, W, bias=c | residual=c)
    Rule("matmul_add", Pat("Add", [Pat("MatMul", name="mm"), Var("c")], commutative=True), _rewrite_matmul_add,
         _check_matmul_add),
    # Add(Gemm(a, b), c) -> Gemm(a, b, c);  Add(Gemm(a, b, C), r) -> FusedMatMul(a, b, C, r)
    Rule("gemm_add", Pat("Add", [Pat("Gemm", name="mm"), Var("c")], commutative=True), _rewrite_matmul_add,
         _check_matmul_add),
    # Act(MatMul(a, b)) -> FusedMatMul(a, b, activation=Act)
    Rule("matmul_activation", Pat(ACTIVATION_OPS, [Pat("MatMul", name="mm")]), _rewrite_matmul_activation,
         _check_matmul_activation),
    # Act(Gemm(a, b, C)) -> FusedMatMul(a, b, C, transA, transB, alpha, beta, activation=Act)
    Rule("gemm_activation", Pat(ACTIVATION_OPS, [Pat("Gemm", name="mm")]), _rewrite_matmul_activation,
         _check_matmul_activation),
    # Act(FusedMatMul(a, b, bias, r)) -> FusedMatMul(a, b, bias, r, activation=Act)
    Rule("fused_matmul_activation", Pat(ACTIVATION_OPS, [_FUSED_MATMUL]), _rewrite_matmul_activation,
         _check_matmul_activation),
    # Add(FusedMatMul(a, b, ...), c) -> FusedMatMul(a, b, bias=c) (row bias, nothing fused yet) or (..., residual=c)
    Rule("fused_matmul_add", Pat("Add", [_FUSED_MATMUL, Var("c")], commutative=True), _rewrite_matmul_add,
         _check_matmul_add),
]
