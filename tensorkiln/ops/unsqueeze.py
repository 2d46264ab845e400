"""Unsqueeze: insert size-1 dims at `axes` of the output (attribute before opset 13, input since)."""

from __future__ import annotations

from typing import Optional, Sequence

from ..ir import TensorType
from ..ir.shape import Dim
from ._shape_common import axes_from, ints_from, normalize_axes
from .registry import InferContext, Op, register


def unsqueezed(shape: Sequence[Dim], axes: Sequence[int]) -> list[Dim]:
    rank = len(shape) + len(axes)
    inserted = set(normalize_axes(axes, rank))
    dims = iter(shape)
    return [1 if i in inserted else next(dims) for i in range(rank)]


@register
class Unsqueeze(Op):
    host_inputs = (1,)
    name = "Unsqueeze"
    attrs = {"axes": None}

    def check(self, node):
        if node.opset < 13 and node.attrs.get("axes") is None:
            return "Unsqueeze before opset 13 needs the 'axes' attribute"
        if node.opset >= 13 and node.attrs.get("axes") is None and (len(node.inputs) < 2 or node.inputs[1] is None):
            return "Unsqueeze needs the 'axes' input"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        known, axes = axes_from(ctx, 1)
        if t.shape is None or not known or axes is None:
            if t.shape is not None and ctx.shape(1) is not None and len(ctx.shape(1)) == 1 \
                    and isinstance(ctx.shape(1)[0], int):
                return [TensorType(t.dtype, (None,) * (len(t.shape) + ctx.shape(1)[0]))]
            return [TensorType(t.dtype, None)]
        return [TensorType(t.dtype, tuple(unsqueezed(t.shape, axes)))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        axes = ints_from(inputs, 1, attrs, "axes")
        return x.reshape(unsqueezed(list(x.shape), axes))
