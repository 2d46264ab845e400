"""MatMulInteger: int8/uint8 matrix product with zero points, accumulated in int32.

a_zero_point is a scalar or one value per row of A (shape [M]); b_zero_point a scalar or
one value per column of B (shape [N]).

The reference multiplies in float64 on the tensors' own device: an 8-bit value minus an 8-bit
zero point is an integer of magnitude at most 255, so every product and every partial sum of
fewer than 2**53 / 255**2 (~1.4e11) of them is an exact float64 integer, whatever order the
BLAS sums in. torch multiplies integer matrices only on the CPU, and slowly there (BERT-base's
[128 x 768] x [768 x 3072] takes ~1.5 s in int64 on 2 cores, ~30 ms in float64).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .matmul import matmul_shape
from .registry import InferContext, Op, register

QUANT_DTYPES = (DType.INT8, DType.UINT8)


def per_row(t: torch.Tensor, a_rank: int) -> torch.Tensor:
    """A zero point or scale of a, one value or one per row, shaped to broadcast against a."""
    if t.dim() == 1 and t.numel() > 1 and a_rank >= 2:
        return t.reshape(-1, 1)
    return t


def quantized_product(a: torch.Tensor, a_zero_point: Optional[torch.Tensor], b: torch.Tensor,
                      b_zero_point: Optional[torch.Tensor]) -> torch.Tensor:
    """(a - a_zero_point) @ (b - b_zero_point) of 8-bit tensors (numpy matmul shapes), exact, as int32
    (wrapped as ONNX's int32 accumulation wraps). a's zero point is a scalar or one per row, b's a
    scalar or one per column."""
    a64 = a.to(torch.float64)
    if a_zero_point is not None:
        a64 = a64 - per_row(a_zero_point, a.dim()).to(torch.float64)
    b64 = b.to(torch.float64)
    if b_zero_point is not None:
        b64 = b64 - b_zero_point.to(torch.float64)
    return torch.matmul(a64, b64).to(torch.int64).to(torch.int32)


@register
class MatMulInteger(Op):
    name = "MatMulInteger"

    def check(self, node) -> Optional[str]:
        for i in (0, 1):
            dt = node.inputs[i].dtype
            if dt is not None and dt not in QUANT_DTYPES:
                return f"MatMulInteger input {i} of type {dt.short} is not supported (int8/uint8 only)"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        a, b = ctx.shape(0), ctx.shape(1)
        return [TensorType(DType.INT32, matmul_shape(a, b))]

    def reference(self, ctx, inputs, attrs):
        return quantized_product(inputs[0], inputs[2] if len(inputs) > 2 else None, inputs[1],
                                 inputs[3] if len(inputs) > 3 else None)
