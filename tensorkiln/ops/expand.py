"""Expand: broadcast the input against a shape (either side may have the larger dims)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType, broadcast_shapes
from .registry import InferContext, Op, as_tuple, register


@register
class Expand(Op):
    host_inputs = (1,)
    name = "Expand"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        target = ctx.const_ints(1)
        if target is None or t.shape is None:
            s = ctx.shape(1)
            if t.shape is not None and s is not None and len(s) == 1 and isinstance(s[0], int):
                return [TensorType(t.dtype, (None,) * max(len(t.shape), s[0]))]
            return [TensorType(t.dtype, None)]
        return [TensorType(t.dtype, broadcast_shapes(t.shape, tuple(target)))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        shape = torch.broadcast_shapes(tuple(x.shape), tuple(as_tuple(inputs[1])))
        # Materialised: a stride-0 view would break any later in-place write to the result.
        return x.expand(shape).contiguous()
