"""MaxUnpool: scatter pooled values back to the positions MaxPool's indices name; zeros elsewhere."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from ._conv_common import ints_or
from .registry import InferContext, Op, register


def _default_spatial(in_sizes, kernel, strides, pads):
    nd = len(kernel)
    return [(in_sizes[i] - 1) * strides[i] - (pads[i] + pads[nd + i]) + kernel[i]
            if isinstance(in_sizes[i], int) else None for i in range(nd)]


@register
class MaxUnpool(Op):
    name = "MaxUnpool"
    # output_shape is read on the host: a constant stays there (no device sync, capturable).
    host_inputs = (2,)
    attrs = {"kernel_shape": None, "pads": None, "strides": None}

    def check(self, node: Node) -> Optional[str]:
        if not node.attrs.get("kernel_shape"):
            return "kernel_shape is required"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if ctx.has_input(2):
            shape = ctx.const_ints(2)
            return [TensorType(t.dtype, None if shape is None else tuple(shape))]
        if t.shape is None:
            return [TensorType(t.dtype, None)]
        kernel = [int(k) for k in ctx.attrs["kernel_shape"]]
        nd = len(kernel)
        spatial = _default_spatial(list(t.shape[2:]), kernel, ints_or(ctx.attrs.get("strides"), 1, nd),
                                   ints_or(ctx.attrs.get("pads"), 0, 2 * nd))
        return [TensorType(t.dtype, (t.shape[0], t.shape[1], *spatial))]

    def reference(self, ctx, inputs, attrs):
        x, idx = inputs[0], inputs[1]
        out_shape = inputs[2] if len(inputs) > 2 else None
        kernel = [int(k) for k in attrs["kernel_shape"]]
        nd = len(kernel)
        spatial = _default_spatial(list(x.shape[2:]), kernel, ints_or(attrs.get("strides"), 1, nd),
                                   ints_or(attrs.get("pads"), 0, 2 * nd))
        shape = [x.shape[0], x.shape[1], *spatial]
        numel = 1
        for s in shape:
            numel *= s
        y = torch.zeros(numel, dtype=x.dtype, device=x.device)
        y[idx.reshape(-1).to(torch.int64)] = x.reshape(-1)
        y = y.reshape(shape)
        if out_shape is None:
            return y
        # Indices address the default-size result; a given output_shape extends (zeros) or crops it
        # at the end of each dim, as ONNX's reference does.
        want = [int(v) for v in out_shape.reshape(-1).tolist()]
        out = torch.zeros(want, dtype=x.dtype, device=x.device)
        common = tuple(slice(0, min(a, b)) for a, b in zip(want, shape))
        out[common] = y[common]
        return out
