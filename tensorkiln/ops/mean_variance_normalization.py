"""MeanVarianceNormalization: (X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9) over `axes`
(default [0, 2, 3]), as the ONNX function body defines it. Half-precision inputs are
computed in float32."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from .layer_normalization import check_float_input
from .registry import InferContext, Op, normalize_axis, register

_EPSILON = 1e-9


@register
class MeanVarianceNormalization(Op):
    name = "MeanVarianceNormalization"
    accumulates_in_fp32 = True  # half-precision inputs are computed in float32 (tests/test_precision.py)
    attrs = {"axes": [0, 2, 3]}

    def check(self, node) -> Optional[str]:
        return check_float_input(self.name, node)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [ctx.type(0)]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        dims = sorted({normalize_axis(int(a), x.dim()) for a in attrs["axes"]})
        mean = xc.mean(dim=dims, keepdim=True)
        centered = xc - mean
        # E[(X - E[X])^2]: equal to the body's E[X^2] - E[X]^2 but without its cancellation.
        var = (centered * centered).mean(dim=dims, keepdim=True)
        return (centered / (torch.sqrt(var) + _EPSILON)).to(x.dtype)
