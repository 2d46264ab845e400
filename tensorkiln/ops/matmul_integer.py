"""MatMulInteger: int8/uint8 matrix product with zero points, accumulated in int32.

a_zero_point is a scalar or one value per row of A (shape [M]); b_zero_point a scalar or
one value per column of B (shape [N]).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .matmul import integer_matmul, matmul_shape
from .registry import InferContext, Op, register

_QUANT_DTYPES = (DType.INT8, DType.UINT8)


def subtract_row_zero_point(a: torch.Tensor, zero_point: Optional[torch.Tensor]) -> torch.Tensor:
    """a (as int32) minus its zero point, which is a scalar or one value per row of a."""
    a = a.to(torch.int32)
    if zero_point is None:
        return a
    zp = zero_point.to(torch.int32)
    if zp.dim() == 1 and zp.numel() > 1 and a.dim() >= 2:
        zp = zp.reshape(-1, 1)
    return a - zp


def subtract_column_zero_point(b: torch.Tensor, zero_point: Optional[torch.Tensor]) -> torch.Tensor:
    """b (as int32) minus its zero point, which is a scalar or one value per column of b."""
    b = b.to(torch.int32)
    if zero_point is None:
        return b
    return b - zero_point.to(torch.int32)


@register
class MatMulInteger(Op):
    name = "MatMulInteger"

    def check(self, node) -> Optional[str]:
        for i in (0, 1):
            dt = node.inputs[i].dtype
            if dt is not None and dt not in _QUANT_DTYPES:
                return f"MatMulInteger input {i} of type {dt.short} is not supported (int8/uint8 only)"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        a, b = ctx.shape(0), ctx.shape(1)
        return [TensorType(DType.INT32, matmul_shape(a, b))]

    def reference(self, ctx, inputs, attrs):
        a = subtract_row_zero_point(inputs[0], inputs[2] if len(inputs) > 2 else None)
        b = subtract_column_zero_point(inputs[1], inputs[3] if len(inputs) > 3 else None)
        return integer_matmul(a, b, torch.int32)
