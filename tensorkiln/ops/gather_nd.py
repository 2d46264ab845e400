"""GatherND: index `data` by the last dim of `indices` (tuples of coordinates), after
`batch_dims` leading dims shared by data and indices."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._shape_common import bounded_index_tuples, zero_where
from .registry import InferContext, Op, register


@register
class GatherND(Op):
    name = "GatherND"
    attrs = {"batch_dims": 0}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        data, idx = ctx.type(0), ctx.type(1)
        if data is None:
            return [None]
        if data.shape is None or idx is None or idx.shape is None or not isinstance(idx.shape[-1], int):
            return [TensorType(data.dtype, None)]
        b = ctx.attrs["batch_dims"]
        k = idx.shape[-1]
        return [TensorType(data.dtype, tuple(idx.shape[:-1]) + tuple(data.shape[b + k:]))]

    def reference(self, ctx, inputs, attrs):
        data, idx = inputs[0], inputs[1].to(torch.int64)
        b = attrs["batch_dims"]
        k = int(idx.shape[-1])
        batch_shape = tuple(data.shape[:b])
        batch = 1
        for d in batch_shape:
            batch *= int(d)
        flat_data = data.reshape((batch,) + tuple(data.shape[b:]))
        coords = idx.reshape(batch, -1, k)
        out_shape = tuple(idx.shape[:-1]) + tuple(data.shape[b + k:])
        if coords.numel() and data.device.type != "cpu" and 0 in data.shape[b:b + k]:
            return data.new_zeros(out_shape)  # every tuple is outside an empty dim (bounded_index_tuples)
        coords, outside = bounded_index_tuples(coords, [int(d) for d in data.shape[b:b + k]], "GatherND")
        rows = torch.arange(batch, device=data.device).reshape(batch, 1).expand(batch, coords.shape[1])
        picked = flat_data[(rows,) + tuple(coords[..., j] for j in range(k))]
        if outside is not None:
            zero_where(picked, outside.any(-1).reshape(tuple(outside.shape[:2]) + (1,) * (picked.dim() - 2)))
        return picked.reshape(out_shape)
