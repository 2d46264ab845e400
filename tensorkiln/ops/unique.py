"""Unique: the distinct values (or slices along `axis`), sorted or in order of first
appearance, with the first-occurrence indices, the inverse indices and the counts."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .registry import InferContext, Op, normalize_axis, register


@register
class Unique(Op):
    name = "Unique"
    attrs = {"axis": None, "sorted": 1}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None] * ctx.num_outputs
        if ctx.attrs.get("axis") is None or t.shape is None:
            y = TensorType(t.dtype, (None,) if ctx.attrs.get("axis") is None else None)
            inverse_len = None
        else:
            axis = normalize_axis(ctx.attrs["axis"], len(t.shape))
            y = TensorType(t.dtype, tuple(None if i == axis else d for i, d in enumerate(t.shape)))
            inverse_len = t.shape[axis]
        if ctx.attrs.get("axis") is None and t.shape is not None:
            n = 1
            for d in t.shape:
                n = n * d if isinstance(d, int) and isinstance(n, int) else None
            inverse_len = n
        return [y, TensorType(DType.INT64, (None,)), TensorType(DType.INT64, (inverse_len,)),
                TensorType(DType.INT64, (None,))][: ctx.num_outputs]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        if attrs.get("axis") is None:
            x, axis = x.reshape(-1), 0
        else:
            axis = normalize_axis(attrs["axis"], x.dim())
        values, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True, dim=axis)
        n = int(x.shape[axis])
        positions = torch.arange(n, device=x.device, dtype=torch.int64)
        first = torch.full((int(counts.numel()),), n, dtype=torch.int64, device=x.device)
        first = first.scatter_reduce(0, inverse, positions, "amin", include_self=True)
        if not attrs["sorted"]:
            order = torch.argsort(first)
            rank_of = torch.empty_like(order)
            rank_of[order] = torch.arange(order.numel(), device=x.device)
            values = values.index_select(axis, order)
            first, counts, inverse = first[order], counts[order], rank_of[inverse]
        return [values, first, inverse.to(torch.int64), counts.to(torch.int64)]
