"""Compress: keep the slices along `axis` (or elements of the flattened input) whose
condition is true; a short condition counts as false beyond its end."""

from __future__ import annotations

from typing import Optional

from ..ir import TensorType
from .registry import InferContext, Op, normalize_axis, register


@register
class Compress(Op):
    name = "Compress"
    attrs = {"axis": None}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if ctx.attrs.get("axis") is None:
            return [TensorType(t.dtype, (None,))]
        if t.shape is None:
            return [TensorType(t.dtype, None)]
        axis = normalize_axis(ctx.attrs["axis"], len(t.shape))
        return [TensorType(t.dtype, tuple(None if i == axis else d for i, d in enumerate(t.shape)))]

    def reference(self, ctx, inputs, attrs):
        x, cond = inputs
        if attrs.get("axis") is None:
            x, axis = x.reshape(-1), 0
        else:
            axis = normalize_axis(attrs["axis"], x.dim())
        cond = cond.reshape(-1)[: x.shape[axis]].to(x.device)
        keep = cond.nonzero().reshape(-1)
        return x.index_select(axis, keep)
