"""ScatterND: write slices of `updates` into a copy of `data` at the coordinate tuples in
the last dim of `indices`, optionally reducing (add 16+, mul 16+, max/min 18+)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._shape_common import from_compute, movable, to_compute
from .registry import InferContext, Op, register, same_as_input

# ONNX reduction -> torch index_reduce reduction (add uses index_add)
_REDUCE = {"mul": "prod", "max": "amax", "min": "amin"}


@register
class ScatterND(Op):
    name = "ScatterND"
    attrs = {"reduction": "none"}

    def check(self, node):
        if node.attrs["reduction"] not in ("none", "add", *_REDUCE):
            return f"reduction '{node.attrs['reduction']}' is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        data, idx, updates = inputs[0], inputs[1].to(torch.int64), inputs[2]
        k = int(idx.shape[-1])
        lead = [int(d) for d in data.shape[:k]]
        sizes = torch.tensor(lead, dtype=torch.int64, device=idx.device)
        coords = idx.reshape(-1, k)
        coords = torch.where(coords < 0, coords + sizes, coords)
        # Row-major linear position of each coordinate tuple among the first k dims.
        strides = [1] * k
        for j in range(k - 2, -1, -1):
            strides[j] = strides[j + 1] * lead[j + 1]
        linear = (coords * torch.tensor(strides, dtype=torch.int64, device=idx.device)).sum(-1)
        rows = 1
        for d in lead:
            rows *= d
        tail = tuple(data.shape[k:])
        reduction = attrs["reduction"]
        if reduction == "none":
            flat = movable(data).reshape((rows,) + tail).clone()
            flat[linear] = movable(updates).reshape((-1,) + tail)
            return flat.view(data.dtype).reshape(data.shape)
        flat = to_compute(data, reduction).reshape((rows,) + tail).clone()
        src = to_compute(updates, reduction).reshape((-1,) + tail)
        if reduction == "add":
            flat.index_add_(0, linear, src)
        else:
            flat.index_reduce_(0, linear, src, _REDUCE[reduction], include_self=True)
        return from_compute(flat, data.dtype, reduction).reshape(data.shape)
