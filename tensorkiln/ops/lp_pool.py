"""LpPool: N-D p-norm pooling over sliding windows (padding contributes zero)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from ._conv_common import PoolGeometry, check_pool_attrs, compute_dtype, infer_pool, window_sum
from .registry import InferContext, Op, register


@register
class LpPool(Op):
    name = "LpPool"
    attrs = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None, "kernel_shape": None, "p": 2, "pads": None,
             "strides": None}

    def normalize(self, attrs, opset):
        out = super().normalize(attrs, opset)
        out["p"] = float(out["p"])  # a float attribute before opset 2
        return out

    def check(self, node: Node) -> Optional[str]:
        return check_pool_attrs(node.attrs)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        if ctx.type(0) is None:
            return [None]
        return [TensorType(ctx.dtype(0), infer_pool(ctx))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        p = float(attrs["p"])
        geo = PoolGeometry(list(x.shape[2:]), attrs)
        cd = compute_dtype(x.dtype)
        total = window_sum(geo.pad(torch.abs(x.to(cd)) ** p, 0.0), geo.kernel, geo.strides, geo.dilations)
        return (total ** (1.0 / p)).to(x.dtype)
