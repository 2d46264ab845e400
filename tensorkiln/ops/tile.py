"""Tile: repeat the input `repeats[i]` times along each axis."""

from __future__ import annotations

from typing import Optional

from ..ir import TensorType
from .registry import InferContext, Op, as_tuple, register


@register
class Tile(Op):
    host_inputs = (1,)
    name = "Tile"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if t.shape is None:
            return [TensorType(t.dtype, None)]
        reps = ctx.const_ints(1)
        if reps is None:
            return [TensorType(t.dtype, (None,) * len(t.shape))]
        if len(reps) != len(t.shape):
            raise ValueError(f"Tile repeats {reps} do not match the input rank {len(t.shape)}")
        return [TensorType(t.dtype, tuple(d if r == 1 else (d * r if isinstance(d, int) else (0 if r == 0 else None))
                                          for d, r in zip(t.shape, reps)))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        reps = as_tuple(inputs[1])
        if len(reps) != x.dim():
            raise ValueError(f"Tile repeats {reps} do not match the input rank {x.dim()}")
        return x.repeat(*reps) if reps else x.clone()
