"""GatherElements: out[i][j] = data[idx[i][j]][j] along `axis` (torch.gather with ONNX's negative indices)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType, Value
from ..ir.shape import Dim
from ._shape_common import axis_index_inputs, bounded_indices, movable, zero_where
from .registry import InferContext, Op, normalize_axis, register


@register
class GatherElements(Op):
    name = "GatherElements"
    attrs = {"axis": 0}

    def index_inputs(self, node: Node) -> list[tuple[Value, Dim]]:
        return axis_index_inputs(node)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        data, idx = ctx.type(0), ctx.type(1)
        if data is None:
            return [None]
        return [TensorType(data.dtype, None if idx is None else idx.shape)]

    def reference(self, ctx, inputs, attrs):
        data, idx = inputs[0], inputs[1]
        axis = normalize_axis(attrs["axis"], data.dim())
        size = int(data.shape[axis])
        if size == 0 and idx.numel() and data.device.type != "cpu":
            return data.new_zeros(idx.shape)  # every index is outside an empty axis (bounded_indices)
        wrapped, outside = bounded_indices(idx, size, "GatherElements", axis)
        out = torch.gather(movable(data), axis, wrapped)
        if outside is not None:
            zero_where(out, outside)
        return out.view(data.dtype)
