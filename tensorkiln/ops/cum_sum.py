"""CumSum: running sum along an axis given as a scalar input, with
ONNX's `exclusive` (start from the identity) and `reverse` (run from the end) flags."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..ir import TensorType
from ._shape_common import movable, scalar_int
from .registry import InferContext, Op, normalize_axis, register, same_as_input


def cumulative(x: torch.Tensor, axis: int, exclusive: int, reverse: int,
               fn: Callable[..., torch.Tensor], identity: int) -> torch.Tensor:
    axis = normalize_axis(axis, x.dim())
    if reverse:
        x = x.flip(axis)
    if exclusive:
        # Shift by one along the axis, filling with the identity, so no subtraction/division rounds.
        n = int(x.shape[axis])
        pad_shape = list(x.shape)
        pad_shape[axis] = 1
        head = torch.full(pad_shape, identity, dtype=x.dtype, device=x.device)
        x = torch.cat([head, x.narrow(axis, 0, max(n - 1, 0))], dim=axis) if n else x
    # Unsigned sums/products wrap exactly as their same-width signed views do.
    work = movable(x)
    out = fn(work, dim=axis, dtype=work.dtype).view(x.dtype)
    return out.flip(axis) if reverse else out


class Cumulative(Op):
    host_inputs = (1,)
    attrs = {"exclusive": 0, "reverse": 0}
    fn: Callable[..., torch.Tensor]
    identity: int

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        op = type(self)
        return cumulative(inputs[0], scalar_int(inputs[1]), attrs["exclusive"], attrs["reverse"], op.fn, op.identity)


@register
class CumSum(Cumulative):
    name = "CumSum"
    fn = torch.cumsum
    identity = 0

