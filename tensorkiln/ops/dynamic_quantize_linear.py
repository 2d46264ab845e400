"""DynamicQuantizeLinear: uint8 quantization with scale and zero point computed from x's range."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .registry import InferContext, Op, register


@register
class DynamicQuantizeLinear(Op):
    name = "DynamicQuantizeLinear"
    since_opset = 11

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [TensorType(DType.UINT8, ctx.shape(0)), TensorType(DType.FLOAT32, ()), TensorType(DType.UINT8, ())]

    def reference(self, ctx, inputs, attrs):
        # float32 arithmetic as ONNX defines it, each step done in float64 and rounded to
        # float32 (exact for one division): CUDA divides by a scalar through its reciprocal.
        x = inputs[0].to(torch.float64)
        zero = torch.zeros((), dtype=torch.float64, device=x.device)
        # The range always includes 0 so that 0 is exactly representable.
        high = torch.maximum(zero, x.max()) if x.numel() else zero
        low = torch.minimum(zero, x.min()) if x.numel() else zero
        span = torch.where(high == low, torch.ones_like(high), _f32(high - low))
        scale = _f32(span / 255.0)
        zero_point = torch.round(_f32(0.0 - _f32(low / scale)).clamp(0.0, 255.0))
        y = (torch.round(_f32(x / scale)) + zero_point).clamp(0.0, 255.0)
        return y.to(torch.uint8), scale.to(torch.float32), zero_point.to(torch.uint8)


def _f32(t: torch.Tensor) -> torch.Tensor:
    """Round a float64 tensor to float32 precision, keeping it float64."""
    return t.to(torch.float32).to(torch.float64)
