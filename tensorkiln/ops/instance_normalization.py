"""InstanceNormalization: per-(sample, channel) normalisation over the spatial dims."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._conv_common import compute_dtype
from .registry import InferContext, Op, register, same_as_input


@register
class InstanceNormalization(Op):
    name = "InstanceNormalization"
    accumulates_in_fp32 = True  # half-precision inputs are computed in float32 (tests/test_precision.py)
    attrs = {"epsilon": 1e-5}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        x, scale, bias = inputs
        cd = compute_dtype(x.dtype)
        xc = x.to(cd)
        dims = list(range(2, x.dim()))
        var, mean = torch.var_mean(xc, dim=dims, unbiased=False, keepdim=True)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = (xc - mean) * torch.rsqrt(var + float(attrs["epsilon"])) * scale.to(cd).reshape(shape) \
            + bias.to(cd).reshape(shape)
        return y.to(x.dtype)
