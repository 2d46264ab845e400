"""The Reduce* ops, as rows of one family table.

Opset differences, handled in one class: `axes` is an attribute until opset 13
(ReduceSum) or 18 (the others) and an optional input after; `noop_with_empty_axes`
exists from the same opsets. Absent or empty axes reduce every dim, unless
noop_with_empty_axes is set: then no dim is reduced and only the op's elementwise part
applies (ReduceSumSquare gives x*x, ReduceL1 |x|, as the ONNX function bodies do).

A reduction over an empty set gives the identity: 0 for sums and norms, 1 for the
product, -inf/+inf (or the dtype's extreme value) for max/min, -inf for the logs.
Half-precision inputs accumulate in float32; integer inputs of ops needing float math
(mean, L2, logs) are computed in float64 and cast back.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from ..ir import DType, Dim, TensorType
from ._ordered import ordered, unordered
from .registry import InferContext, Op, as_tuple, normalize_axis, register

ReduceFn = Callable[[torch.Tensor, list[int], bool], torch.Tensor]
Elementwise = Callable[[torch.Tensor], torch.Tensor]

_HALF = (torch.float16, torch.bfloat16)


def _sum(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.sum(x, dim=dims, keepdim=keepdim)


def _prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    if x.dim() == 0:
        return x
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


def _mean(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.mean(x, dim=dims, keepdim=keepdim)


def _amax(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.amax(x, dim=dims, keepdim=keepdim)


def _amin(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.amin(x, dim=dims, keepdim=keepdim)


def _l1(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.sum(torch.abs(x), dim=dims, keepdim=keepdim)


def _l2(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.sqrt(torch.sum(x * x, dim=dims, keepdim=keepdim))


def _sum_square(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.sum(x * x, dim=dims, keepdim=keepdim)


def _log_sum(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.log(torch.sum(x, dim=dims, keepdim=keepdim))


def _log_sum_exp(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.logsumexp(x, dim=dims, keepdim=keepdim)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _square(x: torch.Tensor) -> torch.Tensor:
    return x * x


class Reduce(Op):
    host_inputs = (1,)
    accumulates_in_fp32 = True  # half-precision inputs are computed in float32 (tests/test_precision.py)
    def __init__(self, name: str, fn: ReduceFn, axes_input_since: int, *, noop: Elementwise = _identity,
                 float_math: bool = False, extreme: Optional[str] = None):
        self.name = name
        self.fn = fn
        self.axes_input_since = axes_input_since
        self.noop = noop
        # Integer inputs need float math (mean, sqrt, log): computed in float64, cast back.
        self.float_math = float_math
        # "max"/"min": order-based, so empty sets need an explicit identity and unsigned
        # dtypes torch cannot compare are mapped to signed ones keeping the order.
        self.extreme = extreme
        self.attrs = {"keepdims": 1, "noop_with_empty_axes": 0}

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = super().normalize(attrs, opset)
        out.setdefault("axes", None)
        return out

    def check(self, node) -> Optional[str]:
        dt = node.inputs[0].dtype if node.inputs and node.inputs[0] is not None else None
        if dt is None:
            return None
        ok = dt.has_torch and (dt in (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)
                               or dt.is_integer or (dt == DType.BOOL and self.extreme is not None))
        if not ok:
            return f"{self.name} of {dt.short} tensors is not supported"
        return None

    # -- axes -----------------------------------------------------------------------------
    def _axes_of_node(self, ctx: InferContext) -> tuple[bool, Optional[list[int]]]:
        """(known, axes) at build time; axes None means absent or empty."""
        if ctx.attrs.get("axes") is not None or ctx.opset < self.axes_input_since:
            axes = ctx.attrs.get("axes")
            return True, list(axes) if axes else None
        if not ctx.has_input(1):
            return True, None
        values = ctx.const_ints(1)
        if values is None:
            return False, None
        return True, values or None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        keepdims = bool(ctx.attrs.get("keepdims", 1))
        known, axes = self._axes_of_node(ctx)
        if t.shape is None:
            return [TensorType(t.dtype, None)]
        rank = len(t.shape)
        if not known:
            return [TensorType(t.dtype, (None,) * rank if keepdims else None)]
        if axes is None:
            if ctx.attrs.get("noop_with_empty_axes"):
                return [t]
            dims = set(range(rank))
        else:
            dims = {normalize_axis(a, rank) for a in axes}
        shape: list[Dim] = []
        for i, d in enumerate(t.shape):
            if i in dims:
                if keepdims:
                    shape.append(1)
            else:
                shape.append(d)
        return [TensorType(t.dtype, tuple(shape))]

    # -- run ------------------------------------------------------------------------------
    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        keepdim = bool(attrs.get("keepdims", 1))
        if len(inputs) > 1 and inputs[1] is not None:
            axes: Optional[Sequence[int]] = as_tuple(inputs[1])
        else:
            axes = attrs.get("axes")
        if not axes:
            if attrs.get("noop_with_empty_axes"):
                return self._compute(x, self.noop)
            dims = list(range(x.dim()))
        else:
            dims = sorted({normalize_axis(int(a), max(x.dim(), 1)) for a in axes})
        if x.dim() == 0:
            dims = []
        if self.extreme is not None and any(x.shape[d] == 0 for d in dims):
            return self._empty_extreme(x, dims, keepdim)
        return self._compute(x, lambda t: self.fn(t, dims, keepdim))

    def _compute(self, x: torch.Tensor, fn: Elementwise) -> torch.Tensor:
        """fn(x) in a dtype torch computes it well in, cast back to x's dtype."""
        dtype = x.dtype
        if self.extreme is not None:
            return _order_preserving(x, fn)
        if dtype in _HALF:
            return fn(x.float()).to(dtype)
        if x.is_floating_point():
            return fn(x)
        if self.float_math:
            return fn(x.double()).to(dtype)
        if dtype == torch.uint64:
            # int64 arithmetic wraps exactly as uint64 does.
            return fn(x.view(torch.int64)).view(torch.uint64)
        return fn(x.to(torch.int64)).to(dtype)

    def _empty_extreme(self, x: torch.Tensor, dims: Sequence[int], keepdim: bool) -> torch.Tensor:
        shape = [1 if i in dims else d for i, d in enumerate(x.shape)] if keepdim else \
            [d for i, d in enumerate(x.shape) if i not in dims]
        want_max = self.extreme == "max"
        if x.dtype == torch.bool:
            value: Any = not want_max
        elif x.is_floating_point():
            value = float("-inf") if want_max else float("inf")
        else:
            info = torch.iinfo(x.dtype)
            value = info.min if want_max else info.max
        return torch.full(shape, value, dtype=x.dtype, device=x.device)


def _order_preserving(x: torch.Tensor, fn: Elementwise) -> torch.Tensor:
    """Apply an order-based fn (max/min) to dtypes torch cannot compare, through a signed
    dtype with the same order."""
    return unordered(fn(ordered(x)), x.dtype)


_REDUCE = [
    Reduce("ReduceSum", _sum, 13),
    Reduce("ReduceMean", _mean, 18, float_math=True),
    Reduce("ReduceMax", _amax, 18, extreme="max"),
    Reduce("ReduceMin", _amin, 18, extreme="min"),
    Reduce("ReduceProd", _prod, 18),
    Reduce("ReduceL1", _l1, 18, noop=torch.abs),
    Reduce("ReduceL2", _l2, 18, noop=torch.abs, float_math=True),
    Reduce("ReduceSumSquare", _sum_square, 18, noop=_square),
    Reduce("ReduceLogSum", _log_sum, 18, noop=torch.log, float_math=True),
    Reduce("ReduceLogSumExp", _log_sum_exp, 18, float_math=True),
]

for _op in _REDUCE:
    register(_op)
