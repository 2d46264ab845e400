"""Shape: the input's dims as int64, optionally the [start, end) part of them (opset 15+)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .registry import InferContext, Op, register


def shape_range(rank: int, start: int, end: Optional[int]) -> tuple[int, int]:
    """Clamped [start, end) over the dims, negative values counting from the end."""
    end = rank if end is None else end
    start = start + rank if start < 0 else start
    end = end + rank if end < 0 else end
    start = min(max(start, 0), rank)
    end = min(max(end, 0), rank)
    return start, max(start, end)


@register
class Shape(Op):
    name = "Shape"
    attrs = {"start": 0, "end": None}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        s = ctx.shape(0)
        if s is None:
            return [TensorType(DType.INT64, (None,))]
        start, end = shape_range(len(s), ctx.attrs["start"], ctx.attrs.get("end"))
        return [TensorType(DType.INT64, (end - start,))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        start, end = shape_range(len(x.shape), attrs["start"], attrs.get("end"))
        return torch.tensor([int(d) for d in x.shape[start:end]], dtype=torch.int64, device=ctx.device)
