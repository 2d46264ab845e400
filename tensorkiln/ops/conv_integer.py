"""ConvInteger: integer convolution of zero-point-shifted 8-bit tensors, accumulated in int32."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, Node, TensorType
from ._conv_common import check_auto_pad, infer_window_shape
from .conv import conv_nd
from .registry import InferContext, Op, register


def shifted(x: torch.Tensor, zero_point: Optional[torch.Tensor], channel_dim_size: Optional[int] = None) -> torch.Tensor:
    """x - zero_point in float64 (exact for 8-bit products summed over any realistic window)."""
    xd = x.to(torch.float64)
    if zero_point is None:
        return xd
    zp = zero_point.to(torch.float64)
    if zp.numel() > 1 and channel_dim_size is not None:
        zp = zp.reshape(-1, *([1] * (x.dim() - 1)))
    return xd - zp


@register
class ConvInteger(Op):
    name = "ConvInteger"
    attrs = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None, "strides": None}

    def check(self, node: Node) -> Optional[str]:
        return check_auto_pad(node.attrs)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        ws = ctx.shape(1)
        kernel = ctx.attrs.get("kernel_shape") or (list(ws[2:]) if ws is not None else None)
        if kernel is None or any(not isinstance(k, int) for k in kernel):
            return [TensorType(DType.INT32, None)]
        return [TensorType(DType.INT32, infer_window_shape(ctx, kernel, None if ws is None else ws[0]))]

    def reference(self, ctx, inputs, attrs):
        x, w = inputs[0], inputs[1]
        xz = inputs[2] if len(inputs) > 2 else None
        wz = inputs[3] if len(inputs) > 3 else None
        y = conv_nd(shifted(x, xz), shifted(w, wz, w.shape[0]), None, attrs)
        return torch.round(y).to(torch.int32)
