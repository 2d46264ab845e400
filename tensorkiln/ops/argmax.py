"""ArgMax, and the index-of-extreme rule it shares with ArgMin.

Ties give the first index, or the last with select_last_index (opset 12+). The result is
int64 with the axis kept as size 1 (keepdims) or removed.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..ir import DType, TensorType
from ._ordered import ordered
from .registry import InferContext, Op, normalize_axis, register

_FLOATS = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)


class ArgExtremeOp(Op):
    attrs = {"axis": 0, "keepdims": 1, "select_last_index": 0}
    torch_fn: Callable[..., torch.Tensor]

    def check(self, node) -> Optional[str]:
        dt = node.inputs[0].dtype
        if dt is not None and not (dt.has_torch and (dt.is_integer or dt in _FLOATS or dt == DType.BOOL)):
            return f"{self.name} of {dt.short} tensors is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        shape = ctx.shape(0)
        if shape is None:
            return [TensorType(DType.INT64, None)]
        rank = len(shape)
        axis = normalize_axis(int(ctx.attrs["axis"]), max(rank, 1))
        if ctx.attrs["keepdims"]:
            out = tuple(1 if i == axis else d for i, d in enumerate(shape))
        else:
            out = tuple(d for i, d in enumerate(shape) if i != axis)
        return [TensorType(DType.INT64, out)]

    def reference(self, ctx, inputs, attrs):
        x = ordered(inputs[0])
        axis = normalize_axis(int(attrs["axis"]), max(x.dim(), 1))
        keepdim = bool(attrs["keepdims"])
        fn = type(self).torch_fn
        if x.dim() == 0:
            return torch.zeros((), dtype=torch.int64, device=x.device)
        if attrs.get("select_last_index"):
            n = x.shape[axis]
            return (n - 1) - fn(torch.flip(x, [axis]), dim=axis, keepdim=keepdim)
        return fn(x, dim=axis, keepdim=keepdim)


@register
class ArgMax(ArgExtremeOp):
    name = "ArgMax"
    torch_fn = staticmethod(torch.argmax)
