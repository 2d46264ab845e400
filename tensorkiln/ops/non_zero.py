"""NonZero: the coordinates of non-zero elements, one column per element (int64, rank x count)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .registry import InferContext, Op, register


@register
class NonZero(Op):
    name = "NonZero"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        s = ctx.shape(0)
        return [TensorType(DType.INT64, (None if s is None else len(s), None))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        if x.dim() == 0:
            return torch.zeros((0, int(bool(x.item()))), dtype=torch.int64, device=x.device)
        # Through a bool mask: torch's nonzero lacks unsigned kernels.
        return torch.nonzero(x != 0).t().contiguous()
