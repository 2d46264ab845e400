"""AveragePool: N-D average pooling with dilations, ceil_mode, auto_pad and count_include_pad."""

from __future__ import annotations

from typing import Optional

from ..ir import Node, TensorType
from ._conv_common import PoolGeometry, check_pool_attrs, compute_dtype, infer_pool, window_sum
from .registry import InferContext, Op, register


@register
class AveragePool(Op):
    name = "AveragePool"
    attrs = {"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0, "dilations": None, "kernel_shape": None,
             "pads": None, "strides": None}

    def check(self, node: Node) -> Optional[str]:
        return check_pool_attrs(node.attrs)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        if ctx.type(0) is None:
            return [None]
        return [TensorType(ctx.dtype(0), infer_pool(ctx))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        geo = PoolGeometry(list(x.shape[2:]), attrs)
        cd = compute_dtype(x.dtype)
        total = window_sum(geo.pad(x.to(cd), 0.0), geo.kernel, geo.strides, geo.dilations)
        count = geo.count(bool(attrs.get("count_include_pad") or 0), x.device, cd)
        return (total / count).to(x.dtype)
