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
        x = inputs[0].to(torch.float32)
        zero = torch.zeros((), dtype=torch.float32, device=x.device)
        # The range always includes 0 so that 0 is exactly representable.
        high = torch.maximum(zero, x.max()) if x.numel() else zero
        low = torch.minimum(zero, x.min()) if x.numel() else zero
        span = torch.where(high == low, torch.ones_like(high), high - low)
        scale = span / 255.0
        zero_point = torch.round((0.0 - low / scale).clamp(0.0, 255.0))
        y = (torch.round(x / scale) + zero_point).clamp(0.0, 255.0)
        return y.to(torch.uint8), scale, zero_point.to(torch.uint8)
