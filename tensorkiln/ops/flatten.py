"""Flatten: to 2-D, splitting the dims before `axis` from those after (negative axis since opset 11)."""

from __future__ import annotations

from typing import Optional

from ..ir import TensorType
from ._shape_common import dims_product
from .registry import InferContext, Op, register


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis <= rank:
        raise ValueError(f"Flatten axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


@register
class Flatten(Op):
    name = "Flatten"
    attrs = {"axis": 1}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if t.shape is None:
            return [TensorType(t.dtype, (None, None))]
        a = _axis(ctx.attrs["axis"], len(t.shape))
        return [TensorType(t.dtype, (dims_product(t.shape[:a]), dims_product(t.shape[a:])))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        a = _axis(attrs["axis"], x.dim())
        outer = 1
        for d in x.shape[:a]:
            outer *= int(d)
        inner = 1
        for d in x.shape[a:]:
            inner *= int(d)
        return x.reshape(outer, inner)
