"""Squeeze: drop size-1 dims (`axes` attribute before opset 13, optional input since)."""

from __future__ import annotations

from typing import Optional

from ..ir import TensorType
from ._shape_common import axes_from, ints_from, normalize_axes
from .registry import InferContext, Op, register


@register
class Squeeze(Op):
    host_inputs = (1,)
    name = "Squeeze"
    attrs = {"axes": None}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        known, axes = axes_from(ctx, 1)
        if t.shape is None or not known:
            return [TensorType(t.dtype, None)]
        if axes is None:
            if any(not isinstance(d, int) for d in t.shape):
                return [TensorType(t.dtype, None)]
            return [TensorType(t.dtype, tuple(d for d in t.shape if d != 1))]
        drop = set(normalize_axes(axes, len(t.shape)))
        for a in drop:
            if isinstance(t.shape[a], int) and t.shape[a] != 1:
                raise ValueError(f"cannot squeeze axis {a} of size {t.shape[a]}")
        return [TensorType(t.dtype, tuple(d for i, d in enumerate(t.shape) if i not in drop))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        axes = ints_from(inputs, 1, attrs, "axes")
        if axes is None:
            return x.reshape([d for d in x.shape if d != 1])
        drop = set(normalize_axes(axes, x.dim()))
        for a in drop:
            if x.shape[a] != 1:
                raise ValueError(f"cannot squeeze axis {a} of size {x.shape[a]}")
        return x.reshape([d for i, d in enumerate(x.shape) if i not in drop])
