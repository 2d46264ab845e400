"""Det: determinant of each square matrix in the last two dims ([*, M, M] -> [*]).
Half-precision inputs are factorized in float32 (LU is unstable in 16 bits) and cast back."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .registry import InferContext, Op, register

_FLOATS = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)


@register
class Det(Op):
    name = "Det"

    def check(self, node) -> Optional[str]:
        dt = node.inputs[0].dtype
        if dt is not None and dt not in _FLOATS:
            return f"Det of {dt.short} tensors is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if t.shape is None:
            return [TensorType(t.dtype, None)]
        if len(t.shape) < 2:
            raise ValueError(f"Det needs a rank >= 2 input, got rank {len(t.shape)}")
        return [TensorType(t.dtype, tuple(t.shape[:-2]))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        if x.dtype in (torch.float16, torch.bfloat16):
            return torch.linalg.det(x.float()).to(x.dtype)
        return torch.linalg.det(x)
