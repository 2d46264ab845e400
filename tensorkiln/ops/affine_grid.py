"""AffineGrid: the sampling grid of 2-D or 3-D affine transforms (the input of GridSample)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..ir import TensorType
from .registry import InferContext, Op, register


@register
class AffineGrid(Op):
    name = "AffineGrid"
    # The output size is read on the host: a constant stays there (no device sync, capturable).
    host_inputs = (1,)
    attrs = {"align_corners": 0}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        size = ctx.const_ints(1)
        if size is None:
            return [TensorType(t.dtype, None)]
        spatial = size[2:]
        return [TensorType(t.dtype, (size[0], *spatial, len(spatial)))]

    def reference(self, ctx, inputs, attrs):
        theta, size_t = inputs
        size = [int(v) for v in size_t.reshape(-1).tolist()]
        cd = theta.dtype if theta.dtype in (torch.float32, torch.float64) else torch.float32
        grid = F.affine_grid(theta.to(cd), size, align_corners=bool(attrs["align_corners"]))
        return grid.to(theta.dtype)
