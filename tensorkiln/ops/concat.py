"""Concat: join along `axis` (required since opset 4; opset 1 defaulted it to 1)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._shape_common import concat_dim
from .registry import REQUIRED, InferContext, Op, normalize_axis, register


@register
class Concat(Op):
    name = "Concat"
    attrs = {"axis": REQUIRED}

    def normalize(self, attrs, opset):
        if opset < 4 and "axis" not in attrs:
            attrs = {**attrs, "axis": 1}
        return super().normalize(attrs, opset)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        types = [ctx.type(i) for i in range(ctx.num_inputs) if ctx.has_input(i)]
        if not types or any(t is None for t in types):
            return [None]
        dtype = types[0].dtype
        shapes = [t.shape for t in types]
        if any(s is None for s in shapes):
            ranks = {len(s) for s in shapes if s is not None}
            return [TensorType(dtype, (None,) * ranks.pop() if len(ranks) == 1 else None)]
        rank = len(shapes[0])
        axis = normalize_axis(ctx.attrs["axis"], rank)
        out = []
        for i in range(rank):
            dims = [s[i] for s in shapes]
            if i == axis:
                out.append(concat_dim(dims))
            else:
                ints = {d for d in dims if isinstance(d, int)}
                out.append(ints.pop() if ints else (dims[0] if len(set(dims)) == 1 else next(
                    (d for d in dims if d is not None), None)))
        return [TensorType(dtype, tuple(out))]

    def reference(self, ctx, inputs, attrs):
        xs = [x for x in inputs if x is not None]
        axis = normalize_axis(attrs["axis"], xs[0].dim())
        return torch.cat(xs, dim=axis)
