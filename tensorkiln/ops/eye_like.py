"""EyeLike: a 2-D tensor shaped like the input with ones on the k-th diagonal, in `dtype`
(default: the input's dtype)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .registry import InferContext, Op, register


@register
class EyeLike(Op):
    name = "EyeLike"
    attrs = {"dtype": None, "k": 0}

    def check(self, node):
        code = node.attrs.get("dtype")
        if code is not None:
            try:
                if not DType(code).has_torch:
                    return f"dtype {DType(code).short} is not supported"
            except ValueError:
                return f"unknown dtype code {code}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        code = ctx.attrs.get("dtype")
        if t is None and code is None:
            return [None]
        dtype = DType(code) if code is not None else t.dtype
        return [TensorType(dtype, None if t is None else t.shape)]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        dtype = DType(attrs["dtype"]).torch if attrs.get("dtype") is not None else x.dtype
        rows, cols = int(x.shape[0]), int(x.shape[1])
        k = int(attrs["k"])
        r = torch.arange(rows, device=x.device).reshape(rows, 1)
        c = torch.arange(cols, device=x.device).reshape(1, cols)
        return (c - r == k).to(dtype)
