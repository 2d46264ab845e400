"""Size: the number of elements of the input, as an int64 scalar."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .registry import InferContext, Op, register


@register
class Size(Op):
    name = "Size"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [TensorType(DType.INT64, ())]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        n = x.numel() if hasattr(x, "numel") else int(x.size)
        return torch.tensor(n, dtype=torch.int64, device=ctx.device)
