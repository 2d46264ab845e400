"""QLinearMatMul: quantized matrix product, requantized to y's scale and zero point.

    y = saturate(round_half_even((a - a_zp) @ (b - b_zp) * (a_scale * b_scale / y_scale)) + y_zp)

a's scale/zero point are per tensor or per row, b's per tensor or per column. The scale
ratio is formed in the scales' dtype (float32, or float16/bfloat16 from opset 21) and the
requantization in float64, as the ONNX reference does, so rounding ties agree.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from .matmul import matmul_shape
from .matmul_integer import QUANT_DTYPES, per_row, quantized_product
from .registry import InferContext, Op, register

def requantize(acc: torch.Tensor, a_rank: int, a_scale: torch.Tensor, b_scale: torch.Tensor, y_scale: torch.Tensor,
               y_zero_point: Optional[torch.Tensor], a_dtype: torch.dtype) -> torch.Tensor:
    """The int32 product `acc` at y's scale and zero point, saturated to y's dtype (y_zero_point's, else a's)."""
    multiplier = per_row(a_scale, a_rank) * b_scale.to(a_scale.dtype) / y_scale.to(a_scale.dtype)
    y = torch.round(acc.double() * multiplier.double())
    out_dtype = y_zero_point.dtype if y_zero_point is not None else a_dtype
    if y_zero_point is not None:
        y = y + y_zero_point.double()
    info = torch.iinfo(out_dtype)
    return y.clamp(info.min, info.max).to(out_dtype)


@register
class QLinearMatMul(Op):
    name = "QLinearMatMul"

    def check(self, node) -> Optional[str]:
        for i in (0, 3, 7):
            v = node.inputs[i] if i < len(node.inputs) else None
            if v is not None and v.dtype is not None and v.dtype not in QUANT_DTYPES:
                return f"QLinearMatMul input {i} of type {v.dtype.short} is not supported (int8/uint8 only)"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        out_dtype = ctx.dtype(7) or ctx.dtype(0)
        if out_dtype is None:
            return [None]
        return [TensorType(out_dtype, matmul_shape(ctx.shape(0), ctx.shape(3)))]

    def reference(self, ctx, inputs, attrs):
        a, a_scale, a_zp, b, b_scale, b_zp, y_scale = inputs[:7]
        y_zp = inputs[7] if len(inputs) > 7 else None
        return requantize(quantized_product(a, a_zp, b, b_zp), a.dim(), a_scale, b_scale, y_scale, y_zp, a.dtype)
