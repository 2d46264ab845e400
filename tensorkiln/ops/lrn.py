"""LRN: local response normalisation across channels."""

from __future__ import annotations

import math
from typing import Optional

import torch.nn.functional as F

from ..ir import TensorType
from ._conv_common import compute_dtype
from .registry import InferContext, Op, register, same_as_input


@register
class LRN(Op):
    name = "LRN"
    attrs = {"alpha": 1e-4, "beta": 0.75, "bias": 1.0, "size": None}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        size = int(attrs["size"])
        cd = compute_dtype(x.dtype)
        sq = x.to(cd) ** 2
        c = x.shape[1]
        lo, hi = (size - 1) // 2, int(math.ceil((size - 1) / 2))
        flat = sq.reshape(x.shape[0], c, -1).transpose(1, 2)  # channels last, to pad them
        padded = F.pad(flat, [lo, hi]).transpose(1, 2)
        total = padded[:, 0:c]
        for i in range(1, size):
            total = total + padded[:, i:i + c]
        total = total.reshape(sq.shape)
        y = x.to(cd) / (float(attrs["bias"]) + float(attrs["alpha"]) / size * total) ** float(attrs["beta"])
        return y.to(x.dtype)
