"""Gather: pick slices along `axis` by (possibly negative) indices.

An index outside [-size, size) is an error on the CPU and a row of zeros on a GPU
(`select_indices` says why)."""

from __future__ import annotations

from typing import Optional

from ..ir import Node, TensorType, Value
from ..ir.shape import Dim
from ._shape_common import axis_index_inputs, select_indices
from .registry import InferContext, Op, normalize_axis, register


@register
class Gather(Op):
    name = "Gather"
    attrs = {"axis": 0}

    def index_inputs(self, node: Node) -> list[tuple[Value, Dim]]:
        return axis_index_inputs(node)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        data, idx = ctx.type(0), ctx.type(1)
        if data is None:
            return [None]
        if data.shape is None or idx is None or idx.shape is None:
            return [TensorType(data.dtype, None)]
        axis = normalize_axis(ctx.attrs["axis"], len(data.shape))
        return [TensorType(data.dtype, data.shape[:axis] + tuple(idx.shape) + data.shape[axis + 1:])]

    def reference(self, ctx, inputs, attrs):
        data, idx = inputs[0], inputs[1]
        axis = normalize_axis(attrs["axis"], data.dim())
        out = select_indices(data, axis, idx, "Gather")
        return out.reshape(tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:]))
