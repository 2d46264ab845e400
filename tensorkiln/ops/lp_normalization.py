"""LpNormalization: x divided by its L1 or L2 norm along `axis`; a zero norm gives 0
(not NaN), as the ONNX reference does. Half-precision inputs are computed in float32."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from .layer_normalization import check_float_input
from .registry import InferContext, Op, normalize_axis, register


@register
class LpNormalization(Op):
    name = "LpNormalization"
    accumulates_in_fp32 = True  # half-precision inputs are computed in float32 (tests/test_precision.py)
    attrs = {"axis": -1, "p": 2}

    def check(self, node) -> Optional[str]:
        if node.attrs.get("p") not in (1, 2):
            return f"LpNormalization p={node.attrs.get('p')} is not supported (1 or 2)"
        return check_float_input(self.name, node)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [ctx.type(0)]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        axis = normalize_axis(int(attrs["axis"]), x.dim())
        if int(attrs["p"]) == 1:
            norm = xc.abs().sum(dim=axis, keepdim=True)
        else:
            norm = torch.sqrt((xc * xc).sum(dim=axis, keepdim=True))
        y = torch.where(norm == 0, torch.zeros_like(xc), xc / norm)
        return y.to(x.dtype)
