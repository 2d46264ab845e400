"""Conv: N-D (1-D, 2-D, 3-D) grouped, dilated, strided convolution with explicit or automatic padding."""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..ir import Node, TensorType
from ._conv_common import auto_pad_str, check_auto_pad, compute_dtype, conv_fn, infer_window_shape, ints_or, \
    pad_spatial, window_pads
from .registry import InferContext, Op, register


def conv_nd(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    """ONNX Conv semantics on tensors already in a dtype torch convolves (asymmetric pads done by F.pad)."""
    nd = x.dim() - 2
    kernel = list(w.shape[2:])
    strides = ints_or(attrs.get("strides"), 1, nd)
    dilations = ints_or(attrs.get("dilations"), 1, nd)
    pads = window_pads(auto_pad_str(attrs.get("auto_pad")), list(x.shape[2:]), kernel, strides, dilations,
                       attrs.get("pads"))
    x = pad_spatial(x, pads[:nd], pads[nd:])
    return conv_fn(nd)(x, w, b, stride=strides, dilation=dilations, groups=int(attrs.get("group") or 1))


@register
class Conv(Op):
    name = "Conv"
    attrs = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None, "strides": None}

    def check(self, node: Node) -> Optional[str]:
        return check_auto_pad(node.attrs)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        wshape = ctx.shape(1)
        if ctx.type(0) is None:
            return [None]
        kernel = ctx.attrs.get("kernel_shape") or (list(wshape[2:]) if wshape is not None else None)
        if kernel is None or any(not isinstance(k, int) for k in kernel):
            return [TensorType(ctx.dtype(0), None)]
        return [TensorType(ctx.dtype(0), infer_window_shape(ctx, kernel, None if wshape is None else wshape[0]))]

    def reference(self, ctx, inputs, attrs):
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        cd = compute_dtype(x.dtype) if x.device.type == "cpu" else x.dtype
        y = conv_nd(x.to(cd), w.to(cd), None if b is None else b.to(cd), attrs)
        return y.to(x.dtype)
