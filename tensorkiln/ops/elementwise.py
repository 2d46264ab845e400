"""The trivial elementwise ops, as rows of family tables (unary, binary, variadic).

Each row names the ONNX op and the torch function computing it; dtype rules are per
family (comparisons and logic give bool, the rest keep the input dtype).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..ir import DType, TensorType, broadcast_shapes
from .registry import InferContext, Op, register

Fn = Callable[..., torch.Tensor]

# torch has storage but almost no kernels for these; compute in int64 and convert back.
# Wrap-around arithmetic stays exact (two's complement); uint64 values >= 2**63 compare wrongly.
_WIDEN = {torch.uint16: torch.int64, torch.uint32: torch.int64, torch.uint64: torch.int64}


def _widened(fn: Fn, *xs: torch.Tensor, **kw) -> torch.Tensor:
    wide = _WIDEN.get(xs[0].dtype)
    if wide is None:
        return fn(*xs, **kw)
    out = fn(*(x.to(wide) for x in xs), **kw)
    return out if out.dtype == torch.bool else out.to(xs[0].dtype)


class Unary(Op):
    def __init__(self, name: str, fn: Fn, attrs: Optional[dict[str, Any]] = None, out_dtype: Optional[DType] = None,
                 float_compute: bool = False):
        self.name = name
        self.fn = fn
        self.attrs = attrs or {}
        self.out_dtype = out_dtype
        # Integer inputs of float-only torch functions are computed in float64 and cast back.
        self.float_compute = float_compute

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        return [TensorType(self.out_dtype or t.dtype, t.shape)]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        if self.float_compute and not x.is_floating_point():
            return self.fn(x.double(), **attrs).to(x.dtype)
        return _widened(self.fn, x, **attrs)


class Binary(Op):
    def __init__(self, name: str, fn: Fn, out_dtype: Optional[DType] = None, attrs: Optional[dict[str, Any]] = None):
        self.name = name
        self.fn = fn
        self.out_dtype = out_dtype
        self.attrs = attrs or {}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        a, b = ctx.type(0), ctx.type(1)
        if a is None or b is None:
            return [None]
        return [TensorType(self.out_dtype or a.dtype, broadcast_shapes(a.shape, b.shape))]

    def reference(self, ctx, inputs, attrs):
        return _widened(self.fn, inputs[0], inputs[1], **attrs)


class Variadic(Op):
    """Sum/Mean/Max/Min: any number of inputs, broadcast together."""

    def __init__(self, name: str, fn: Fn):
        self.name = name
        self.fn = fn

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        types = [ctx.type(i) for i in range(ctx.num_inputs)]
        if any(t is None for t in types):
            return [None]
        return [TensorType(types[0].dtype, broadcast_shapes(*(t.shape for t in types)))]

    def reference(self, ctx, inputs, attrs):
        xs = [x for x in inputs if x is not None]
        wide = _WIDEN.get(xs[0].dtype)
        if wide is None:
            return self.fn(xs)
        return self.fn([x.to(wide) for x in xs]).to(xs[0].dtype)


def _keep_dtype(fn: Fn) -> Fn:
    def run(a, b, **kw):
        return fn(a, b, **kw).to(a.dtype)
    return run


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point():
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc").to(a.dtype)


def _mod(a: torch.Tensor, b: torch.Tensor, fmod: int = 0) -> torch.Tensor:
    return torch.fmod(a, b) if fmod else torch.remainder(a, b)


def _bitshift(a: torch.Tensor, b: torch.Tensor, direction: str = "") -> torch.Tensor:
    if direction == "LEFT":
        return torch.bitwise_left_shift(a, b)
    return torch.bitwise_right_shift(a, b)


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if not a.is_floating_point() and b.is_floating_point():
        return torch.pow(a.double(), b.double()).to(a.dtype)
    return torch.pow(a, b.to(a.dtype) if a.is_floating_point() else b).to(a.dtype)


def _prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 0, x * slope, x)


def _is_inf(x: torch.Tensor, detect_negative: int = 1, detect_positive: int = 1) -> torch.Tensor:
    pos = torch.isposinf(x) if detect_positive else torch.zeros_like(x, dtype=torch.bool)
    neg = torch.isneginf(x) if detect_negative else torch.zeros_like(x, dtype=torch.bool)
    return pos | neg


def _round(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x)  # round half to even, as ONNX asks


def _fold(fn: Fn) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    def run(xs: list[torch.Tensor]) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return run


def _mean(xs: list[torch.Tensor]) -> torch.Tensor:
    return _fold(torch.add)(xs) / len(xs)


_UNARY = [
    Unary("Abs", torch.abs), Unary("Neg", torch.neg), Unary("Floor", torch.floor), Unary("Ceil", torch.ceil),
    Unary("Round", _round), Unary("Sign", torch.sign), Unary("Reciprocal", torch.reciprocal),
    Unary("Sqrt", torch.sqrt), Unary("Exp", torch.exp), Unary("Log", torch.log), Unary("Erf", torch.erf),
    Unary("Sin", torch.sin), Unary("Cos", torch.cos), Unary("Tan", torch.tan), Unary("Asin", torch.asin),
    Unary("Acos", torch.acos), Unary("Atan", torch.atan), Unary("Sinh", torch.sinh), Unary("Cosh", torch.cosh),
    Unary("Asinh", torch.asinh), Unary("Acosh", torch.acosh), Unary("Atanh", torch.atanh),
    Unary("Relu", torch.relu), Unary("Sigmoid", torch.sigmoid), Unary("Tanh", torch.tanh),
    Unary("Softsign", torch.nn.functional.softsign), Unary("Softplus", torch.nn.functional.softplus),
    Unary("Not", torch.logical_not), Unary("BitwiseNot", torch.bitwise_not),
    Unary("IsNaN", torch.isnan, out_dtype=DType.BOOL),
    Unary("IsInf", _is_inf, attrs={"detect_negative": 1, "detect_positive": 1}, out_dtype=DType.BOOL),
]

_BINARY = [
    Binary("Add", torch.add), Binary("Sub", torch.sub), Binary("Mul", torch.mul), Binary("Div", _div),
    Binary("Pow", _pow), Binary("Mod", _mod, attrs={"fmod": 0}), Binary("PRelu", _prelu),
    Binary("BitShift", _bitshift, attrs={"direction": ""}),
    Binary("BitwiseAnd", torch.bitwise_and), Binary("BitwiseOr", torch.bitwise_or),
    Binary("BitwiseXor", torch.bitwise_xor),
    Binary("And", torch.logical_and, DType.BOOL), Binary("Or", torch.logical_or, DType.BOOL),
    Binary("Xor", torch.logical_xor, DType.BOOL), Binary("Equal", torch.eq, DType.BOOL),
    Binary("Less", torch.lt, DType.BOOL), Binary("Greater", torch.gt, DType.BOOL),
    Binary("LessOrEqual", torch.le, DType.BOOL), Binary("GreaterOrEqual", torch.ge, DType.BOOL),
]

_VARIADIC = [
    Variadic("Sum", _fold(torch.add)), Variadic("Mean", _mean),
    Variadic("Max", _fold(torch.maximum)), Variadic("Min", _fold(torch.minimum)),
]

for _op in _UNARY + _BINARY + _VARIADIC:
    register(_op)
