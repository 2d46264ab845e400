"""RMSNormalization (opset 23): Y = X / sqrt(mean(X^2 over axis..last) + epsilon) * Scale.

Computed in the `stash_type` dtype (float32 by default) and cast back to X's dtype.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from .layer_normalization import check_float_input, stash_dtype
from .registry import InferContext, Op, normalize_axis, register


@register
class RMSNormalization(Op):
    name = "RMSNormalization"
    accumulates_in_fp32 = True  # half-precision inputs are computed in float32 (tests/test_precision.py)
    attrs = {"axis": -1, "epsilon": 1e-5, "stash_type": 1}

    def check(self, node) -> Optional[str]:
        return check_float_input(self.name, node)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is not None and t.shape is not None:
            normalize_axis(int(ctx.attrs["axis"]), len(t.shape))
        return [t]

    def reference(self, ctx, inputs, attrs):
        x, scale = inputs[0], inputs[1]
        compute = stash_dtype(attrs["stash_type"]).torch
        axis = normalize_axis(int(attrs["axis"]), x.dim())
        dims = list(range(axis, x.dim()))
        xc = x.to(compute)
        inv_rms = torch.rsqrt((xc * xc).mean(dim=dims, keepdim=True) + float(attrs["epsilon"]))
        wide = compute if compute.itemsize >= x.dtype.itemsize else x.dtype
        return ((xc * inv_rms).to(wide) * scale.to(wide)).to(x.dtype)
