"""GroupNormalization: statistics over groups of channels; per-group affine (opset 18) or
per-channel affine (opset 21)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from .registry import InferContext, Op, register, same_as_input


@register
class GroupNormalization(Op):
    name = "GroupNormalization"
    accumulates_in_fp32 = True  # half-precision inputs are computed in float32 (tests/test_precision.py)
    attrs = {"epsilon": 1e-5, "num_groups": None, "stash_type": 1}

    def check(self, node: Node) -> Optional[str]:
        if not node.attrs.get("num_groups"):
            return "num_groups is required"
        if node.attrs.get("stash_type", 1) not in (1, 11):
            return f"stash_type {node.attrs['stash_type']} is not supported (1: float32, 11: float64)"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        x, scale, bias = inputs
        groups = int(attrs["num_groups"])
        stash = torch.float64 if attrs.get("stash_type", 1) == 11 or x.dtype == torch.float64 else torch.float32
        n, c = x.shape[0], x.shape[1]
        xg = x.to(stash).reshape(n, groups, -1)
        var, mean = torch.var_mean(xg, dim=2, unbiased=False, keepdim=True)
        y = ((xg - mean) * torch.rsqrt(var + float(attrs["epsilon"]))).reshape(x.shape)
        if scale.numel() != c:  # opset 18: one scale/bias per group
            scale = scale.repeat_interleave(c // groups)
            bias = bias.repeat_interleave(c // groups)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = y.to(x.dtype).to(stash) * scale.to(stash).reshape(shape) + bias.to(stash).reshape(shape)
        return y.to(x.dtype)
