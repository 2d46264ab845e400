"""Trilu: keep the upper (or lower) triangle of the last two dims, from the k-th diagonal."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._shape_common import scalar_int
from .registry import InferContext, Op, register, same_as_input


@register
class Trilu(Op):
    host_inputs = (1,)
    name = "Trilu"
    attrs = {"upper": 1}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        k = scalar_int(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else 0
        rows, cols = int(x.shape[-2]), int(x.shape[-1])
        r = torch.arange(rows, device=x.device).reshape(rows, 1)
        c = torch.arange(cols, device=x.device).reshape(1, cols)
        keep = (c - r >= k) if attrs["upper"] else (c - r <= k)
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
