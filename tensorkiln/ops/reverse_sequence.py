"""ReverseSequence: reverse the first sequence_lens[b] steps along `time_axis` of each
batch entry b (along `batch_axis`); later steps stay in place."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._shape_common import movable
from .registry import InferContext, Op, register, same_as_input


@register
class ReverseSequence(Op):
    name = "ReverseSequence"
    attrs = {"batch_axis": 1, "time_axis": 0}

    def check(self, node):
        if {node.attrs["batch_axis"], node.attrs["time_axis"]} != {0, 1}:
            return "batch_axis and time_axis must be 0 and 1"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        x, lens = inputs[0], inputs[1].to(torch.int64)
        t_axis, b_axis = attrs["time_axis"], attrs["batch_axis"]
        steps, batch = int(x.shape[t_axis]), int(x.shape[b_axis])
        t = torch.arange(steps, device=x.device).reshape(steps, 1)
        lens = lens.reshape(1, batch)
        src = torch.where(t < lens, lens - 1 - t, t)  # [time, batch]
        if t_axis == 1:
            src = src.t()
        src = src.reshape(src.shape + (1,) * (x.dim() - 2)).expand(x.shape)
        return torch.gather(movable(x), t_axis, src).view(x.dtype)
