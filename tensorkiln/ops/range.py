"""Range: start, start + delta, ... up to (not including) limit; all three are scalars of one dtype."""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..ir import TensorType
from .registry import InferContext, Op, register


def range_length(start: float, limit: float, delta: float) -> int:
    if delta == 0:
        raise ValueError("Range delta cannot be 0")
    return max(int(math.ceil((limit - start) / delta)), 0)


@register
class Range(Op):
    host_inputs = (0, 1, 2)
    name = "Range"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        dtype = ctx.dtype(0)
        if dtype is None:
            return [None]
        consts = [ctx.const(i) for i in range(3)]
        if any(c is None for c in consts):
            return [TensorType(dtype, (None,))]
        start, limit, delta = (c.reshape(-1)[0].item() for c in consts)
        return [TensorType(dtype, (range_length(start, limit, delta),))]

    def reference(self, ctx, inputs, attrs):
        start, limit, delta = inputs
        dtype = start.dtype
        s, l, d = (x.reshape(-1)[0].item() for x in (start, limit, delta))
        n = range_length(s, l, d)
        if dtype.is_floating_point:
            # start + i * delta in float64 then rounded once, as the reference computes it.
            steps = torch.arange(n, dtype=torch.float64, device=ctx.device)
            return (s + steps * d).to(dtype)
        return torch.arange(n, dtype=torch.int64, device=ctx.device).mul_(int(d)).add_(int(s)).to(dtype)
