"""GlobalAveragePool, GlobalMaxPool, GlobalLpPool: reductions over all spatial dims, kept as size 1."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..ir import TensorType
from ._conv_common import compute_dtype
from .registry import InferContext, Op, register


class GlobalPool(Op):
    accumulates_in_fp32 = True  # half-precision inputs are computed in float32 (tests/test_precision.py)
    def __init__(self, name: str, fn: Callable[[torch.Tensor, list[int], dict[str, Any]], torch.Tensor],
                 attrs: Optional[dict[str, Any]] = None):
        self.name = name
        self.fn = fn
        self.attrs = attrs or {}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if t.shape is None:
            return [TensorType(t.dtype, None)]
        return [TensorType(t.dtype, tuple(t.shape[:2]) + (1,) * (len(t.shape) - 2))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        dims = list(range(2, x.dim()))
        if not dims:
            return x.clone()
        return self.fn(x, dims, attrs).to(x.dtype)


def _avg(x: torch.Tensor, dims: list[int], attrs: dict[str, Any]) -> torch.Tensor:
    return x.to(compute_dtype(x.dtype)).mean(dim=dims, keepdim=True)


def _max(x: torch.Tensor, dims: list[int], attrs: dict[str, Any]) -> torch.Tensor:
    return x.amax(dim=dims, keepdim=True)


def _lp(x: torch.Tensor, dims: list[int], attrs: dict[str, Any]) -> torch.Tensor:
    p = float(attrs.get("p", 2))
    return (torch.abs(x.to(compute_dtype(x.dtype))) ** p).sum(dim=dims, keepdim=True) ** (1.0 / p)


for _op in (GlobalPool("GlobalAveragePool", _avg), GlobalPool("GlobalMaxPool", _max),
            GlobalPool("GlobalLpPool", _lp, {"p": 2})):
    register(_op)
