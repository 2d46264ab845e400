"""QLinearConv: convolution of quantized tensors with requantization of the result."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from ._conv_common import check_auto_pad, infer_window_shape
from .conv import conv_nd
from .conv_integer import shifted
from .registry import InferContext, Op, register


@register
class QLinearConv(Op):
    name = "QLinearConv"
    attrs = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None, "strides": None}

    def check(self, node: Node) -> Optional[str]:
        return check_auto_pad(node.attrs)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        ws = ctx.shape(3)
        dtype = ctx.dtype(7) or ctx.dtype(0)
        if dtype is None:
            return [None]
        kernel = ctx.attrs.get("kernel_shape") or (list(ws[2:]) if ws is not None else None)
        if kernel is None or any(not isinstance(k, int) for k in kernel):
            return [TensorType(dtype, None)]
        return [TensorType(dtype, infer_window_shape(ctx, kernel, None if ws is None else ws[0]))]

    def reference(self, ctx, inputs, attrs):
        x, xs, xz, w, ws, wz, ys, yz = inputs[:8]
        b = inputs[8] if len(inputs) > 8 else None
        acc = conv_nd(shifted(x, xz), shifted(w, wz, w.shape[0]), None, attrs)
        nd = x.dim() - 2
        if b is not None:
            acc = acc + b.to(torch.float64).reshape(1, -1, *([1] * nd))
        w_scale = ws.to(torch.float64)
        if w_scale.numel() > 1:
            w_scale = w_scale.reshape(1, -1, *([1] * nd))
        y = torch.round(acc * (xs.to(torch.float64) * w_scale / ys.to(torch.float64)))
        out_dtype = yz.dtype if yz is not None else x.dtype
        if yz is not None:
            y = y + yz.to(torch.float64)
        info = torch.iinfo(out_dtype)
        return y.clamp(info.min, info.max).to(out_dtype)
