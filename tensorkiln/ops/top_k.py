"""TopK: the k largest (or smallest, opset 11+) values along `axis` and their int64 indices.

k is an attribute in opset 1 and an input since 10. Equal values keep the lower index
first, which a stable sort gives and torch.topk does not promise.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from ._shape_common import movable, scalar_int, to_compute
from .registry import InferContext, Op, normalize_axis, register



@register
class TopK(Op):
    host_inputs = (1,)
    name = "TopK"
    attrs = {"axis": -1, "k": None, "largest": 1, "sorted": 1}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None, None]
        if t.shape is None:
            return [TensorType(t.dtype, None), TensorType(DType.INT64, None)]
        axis = normalize_axis(ctx.attrs["axis"], len(t.shape))
        k = ctx.attrs.get("k")
        if k is None:
            ks = ctx.const_ints(1)
            k = None if ks is None else ks[0]
        dims = list(t.shape)
        dims[axis] = k
        return [TensorType(t.dtype, tuple(dims)), TensorType(DType.INT64, tuple(dims))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        axis = normalize_axis(attrs["axis"], x.dim())
        k = attrs["k"] if attrs.get("k") is not None else scalar_int(inputs[1])
        if not 0 <= k <= x.shape[axis]:
            raise ValueError(f"TopK k={k} is out of range for a dim of {x.shape[axis]}")
        _, order = torch.sort(to_compute(x, "max"), dim=axis, descending=bool(attrs["largest"]), stable=True)
        indices = order.narrow(axis, 0, k)
        return [torch.gather(movable(x), axis, indices).view(x.dtype), indices]
