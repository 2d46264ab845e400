"""Slice: starts/ends/axes as attributes (opset 1-9), or starts/ends/axes/steps as inputs (10+).

Out-of-range bounds clamp; negative steps walk backwards (torch slicing cannot, so those
gather with an index range).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..ir import TensorType
from ._shape_common import normalize_axes, slice_bounds, slice_dim
from .registry import InferContext, Op, as_tuple, register


def _params(starts: list[int], ends: list[int], axes: Optional[list[int]], steps: Optional[list[int]], rank: int
            ) -> list[tuple[int, int, int, int]]:
    """(axis, start, end, step) for each sliced axis."""
    if len(starts) != len(ends):
        raise ValueError(f"Slice starts {starts} and ends {ends} differ in length")
    axes = list(range(len(starts))) if axes is None else normalize_axes(axes, rank)
    steps = [1] * len(starts) if steps is None else steps
    if not len(axes) == len(steps) == len(starts):
        raise ValueError("Slice starts, ends, axes and steps differ in length")
    return list(zip(axes, starts, ends, steps))


@register
class Slice(Op):
    host_inputs = (1, 2, 3, 4)
    name = "Slice"
    attrs = {"starts": None, "ends": None, "axes": None}

    def check(self, node):
        if node.opset < 10 and (node.attrs.get("starts") is None or node.attrs.get("ends") is None):
            return "Slice before opset 10 needs the 'starts' and 'ends' attributes"
        return None

    def _consts(self, ctx: InferContext) -> Optional[tuple[list[int], list[int], Optional[list[int]],
                                                          Optional[list[int]]]]:
        if ctx.opset < 10:
            return ctx.attrs["starts"], ctx.attrs["ends"], ctx.attrs.get("axes"), None
        starts, ends = ctx.const_ints(1), ctx.const_ints(2)
        axes = ctx.const_ints(3) if ctx.has_input(3) else None
        steps = ctx.const_ints(4) if ctx.has_input(4) else None
        if starts is None or ends is None:
            return None
        if (ctx.has_input(3) and axes is None) or (ctx.has_input(4) and steps is None):
            return None
        return starts, ends, axes, steps

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if t.shape is None:
            return [TensorType(t.dtype, None)]
        consts = self._consts(ctx)
        if consts is None:
            # Which axes are sliced is unknown unless the axes are constant.
            axes = ctx.const_ints(3) if ctx.has_input(3) else None
            if axes is None:
                return [TensorType(t.dtype, (None,) * len(t.shape))]
            sliced = set(normalize_axes(axes, len(t.shape)))
            return [TensorType(t.dtype, tuple(None if i in sliced else d for i, d in enumerate(t.shape)))]
        dims = list(t.shape)
        for axis, start, end, step in _params(*consts, len(dims)):
            dims[axis] = slice_dim(dims[axis], start, end, step)
        return [TensorType(t.dtype, tuple(dims))]

    def reference(self, ctx, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]):
        x = inputs[0]
        if attrs.get("starts") is not None:
            params = _params(list(attrs["starts"]), list(attrs["ends"]), attrs.get("axes"), None, x.dim())
        else:
            opt = [None if i >= len(inputs) or inputs[i] is None else as_tuple(inputs[i]) for i in (3, 4)]
            params = _params(as_tuple(inputs[1]), as_tuple(inputs[2]), opt[0], opt[1], x.dim())
        index: list[Any] = [slice(None)] * x.dim()
        backwards = []
        for axis, start, end, step in params:
            s, e = slice_bounds(start, end, step, int(x.shape[axis]))
            if step > 0:
                index[axis] = slice(s, e, step)
            else:
                backwards.append((axis, s, e, step))
        out = x[tuple(index)]
        for axis, s, e, step in backwards:
            positions = torch.arange(s, e, step, device=x.device, dtype=torch.int64)
            out = out.index_select(axis, positions)
        return out
