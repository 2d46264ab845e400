"""Where: elementwise choice between X and Y by a boolean condition, all three broadcast."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType, broadcast_shapes
from .registry import InferContext, Op, register


@register
class Where(Op):
    name = "Where"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        c, x, y = ctx.type(0), ctx.type(1), ctx.type(2)
        if x is None and y is None:
            return [None]
        dtype = (x or y).dtype
        if c is None or x is None or y is None:
            return [TensorType(dtype, None)]
        return [TensorType(dtype, broadcast_shapes(c.shape, x.shape, y.shape))]

    def reference(self, ctx, inputs, attrs):
        cond, x, y = inputs
        return torch.where(cond.to(torch.bool), x, y)
