"""CenterCropPad: crop or zero-pad chosen axes to a target size, centred (the odd unit goes to the end)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from .registry import InferContext, Op, register


@register
class CenterCropPad(Op):
    name = "CenterCropPad"
    # The target shape is read on the host: a constant stays there (no device sync, capturable).
    host_inputs = (1,)
    attrs = {"axes": None}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None or t.shape is None:
            return [t]
        target = ctx.const_ints(1)
        rank = len(t.shape)
        axes = ctx.attrs.get("axes") or list(range(rank))
        axes = [a + rank if a < 0 else a for a in axes]
        if target is None:
            return [TensorType(t.dtype, tuple(None if i in axes else d for i, d in enumerate(t.shape)))]
        shape = list(t.shape)
        for a, s in zip(axes, target):
            shape[a] = s
        return [TensorType(t.dtype, tuple(shape))]

    def reference(self, ctx, inputs, attrs):
        x, shape_t = inputs
        rank = x.dim()
        axes = attrs.get("axes") or list(range(rank))
        axes = [a + rank if a < 0 else a for a in axes]
        target = [int(v) for v in shape_t.reshape(-1).tolist()]
        out_shape = list(x.shape)
        src = [slice(None)] * rank
        dst = [slice(None)] * rank
        for a, want in zip(axes, target):
            have = x.shape[a]
            out_shape[a] = want
            if want < have:
                start = (have - want) // 2
                src[a] = slice(start, start + want)
            elif want > have:
                start = (want - have) // 2
                dst[a] = slice(start, start + have)
        out = torch.zeros(out_shape, dtype=x.dtype, device=x.device)
        out[tuple(dst)] = x[tuple(src)]
        return out
