"""DequantizeLinear: y = (x - x_zero_point) * x_scale, per tensor, per axis or blocked."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, Node, TensorType
from ._dtype_convert import FLOAT8, dtype_of, to_torch
from .quantize_linear import expand_quant_param
from .registry import InferContext, Op, register

_OUTPUTS = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)


def _output_dtype(scale: Optional[DType], output_dtype: int) -> Optional[DType]:
    if output_dtype:
        return DType(output_dtype)
    if scale is None:
        return None
    return scale if scale in _OUTPUTS else DType.FLOAT32


@register
class DequantizeLinear(Op):
    name = "DequantizeLinear"
    since_opset = 10
    attrs = {"axis": 1, "block_size": 0, "output_dtype": 0}

    def check(self, node: Node) -> Optional[str]:
        out = node.attrs["output_dtype"]
        if out and DType(out) not in _OUTPUTS:
            return f"output_dtype {DType(out).short} is not one of float32, float16, bfloat16"
        x = node.inputs[0].type
        if x is not None and x.dtype not in (DType.INT8, DType.UINT8, DType.INT16, DType.UINT16, DType.INT32,
                                             DType.INT4, DType.UINT4, DType.INT2, DType.UINT2, DType.FLOAT4E2M1,
                                             *FLOAT8):
            return f"dequantizing {x.dtype.short} is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        out = _output_dtype(ctx.dtype(1), ctx.attrs["output_dtype"])
        return [None if out is None else TensorType(out, ctx.shape(0))]

    def reference(self, ctx, inputs, attrs):
        x_dtype = dtype_of(inputs[0])
        x = to_torch(inputs[0], ctx.device)
        scale = to_torch(inputs[1], ctx.device)
        out = _output_dtype(dtype_of(inputs[1]), attrs["output_dtype"])
        axis, block = attrs["axis"], attrs["block_size"]
        compute = torch.float64 if scale.dtype == torch.float64 else torch.float32
        dx = x.to(compute)
        zero_point = inputs[2] if len(inputs) > 2 else None
        # float8 and float4 zero points only name the type: their value is zero.
        if zero_point is not None and x_dtype not in FLOAT8 and x_dtype != DType.FLOAT4E2M1:
            zp = expand_quant_param(to_torch(zero_point, ctx.device), tuple(x.shape), axis, block)
            dx = dx - zp.to(compute)
        y = dx * expand_quant_param(scale, tuple(x.shape), axis, block).to(compute)
        return y.to(out.torch)
