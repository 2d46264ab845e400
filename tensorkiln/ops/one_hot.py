"""OneHot: a new `axis` of size `depth` holding values[1] where the index points and
values[0] elsewhere; negative indices count from depth, out-of-range ones give all off."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from .registry import InferContext, Op, normalize_axis, register


@register
class OneHot(Op):
    host_inputs = (1,)
    name = "OneHot"
    attrs = {"axis": -1}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        idx, values = ctx.type(0), ctx.type(2)
        if values is None:
            return [None]
        if idx is None or idx.shape is None:
            return [TensorType(values.dtype, None)]
        depth_const = ctx.const(1)
        depth = None if depth_const is None else int(depth_const.reshape(-1)[0])
        axis = normalize_axis(ctx.attrs["axis"], len(idx.shape) + 1)
        dims = list(idx.shape)
        dims.insert(axis, depth)
        return [TensorType(values.dtype, tuple(dims))]

    def reference(self, ctx, inputs, attrs):
        idx, depth_t, values = inputs
        depth = int(depth_t.reshape(-1)[0].item())
        axis = normalize_axis(attrs["axis"], idx.dim() + 1)
        idx = idx.to(torch.float64).trunc().to(torch.int64) if idx.is_floating_point() else idx.to(torch.int64)
        idx = torch.where(idx < 0, idx + depth, idx)
        positions = torch.arange(depth, device=idx.device, dtype=torch.int64)
        shape = [1] * (idx.dim() + 1)
        shape[axis] = depth
        hot = idx.unsqueeze(axis) == positions.reshape(shape)
        off, on = values.reshape(-1)[0], values.reshape(-1)[1]
        return torch.where(hot, on, off)
