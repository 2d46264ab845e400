"""BatchNormalization: inference with running statistics, and training mode (opset 14+) with batch
statistics and updated running statistics as extra outputs."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from ._conv_common import compute_dtype
from .registry import InferContext, Op, register


def _per_channel(t: torch.Tensor, rank: int, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).reshape(1, -1, *([1] * (rank - 2)))


@register
class BatchNormalization(Op):
    name = "BatchNormalization"
    attrs = {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0, "is_test": 0, "spatial": 1,
             "consumed_inputs": None}

    def normalize(self, attrs, opset):
        out = super().normalize(attrs, opset)
        if opset < 14:
            out["training_mode"] = 0  # older opsets signal training by extra outputs, refused in check()
        return out

    def check(self, node: Node) -> Optional[str]:
        if node.opset < 14 and len(node.outputs) > 1:
            return "training-mode BatchNormalization of opset < 14 (mean/var/saved outputs) is not supported"
        if node.opset < 7 and not node.attrs.get("is_test", 0) and len(node.outputs) > 1:
            return "training-mode BatchNormalization (is_test=0) is not supported"
        if node.opset < 9 and node.attrs.get("spatial", 1) == 0:
            return "BatchNormalization with spatial=0 is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None] * ctx.num_outputs
        out = [t]
        for i in range(1, ctx.num_outputs):
            out.append(ctx.type(3 if i == 1 else 4))
        return out

    def reference(self, ctx, inputs, attrs):
        x, scale, bias, mean, var = inputs[:5]
        eps = float(attrs["epsilon"])
        cd = compute_dtype(x.dtype)
        r = x.dim()
        xc = x.to(cd)
        if not attrs.get("training_mode"):
            inv = torch.rsqrt(_per_channel(var, r, cd) + eps) * _per_channel(scale, r, cd)
            return ((xc - _per_channel(mean, r, cd)) * inv + _per_channel(bias, r, cd)).to(x.dtype)
        dims = [0] + list(range(2, r))
        batch_var, batch_mean = torch.var_mean(xc, dim=dims, unbiased=False)
        m = float(attrs["momentum"])
        y = (xc - _per_channel(batch_mean, r, cd)) * torch.rsqrt(_per_channel(batch_var, r, cd) + eps)
        y = y * _per_channel(scale, r, cd) + _per_channel(bias, r, cd)
        running_mean = mean.to(cd) * m + batch_mean * (1 - m)
        running_var = var.to(cd) * m + batch_var * (1 - m)
        return [y.to(x.dtype), running_mean.to(mean.dtype), running_var.to(var.dtype)]
