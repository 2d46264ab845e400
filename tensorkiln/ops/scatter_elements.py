"""ScatterElements (and its deprecated predecessor Scatter): write `updates` into a copy of
`data` at per-element indices along `axis`, optionally reducing (add 16+, mul 16+, max/min 18+)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._shape_common import SCATTER_REDUCTIONS, bounded_indices, from_compute, movable, to_compute
from .registry import InferContext, Op, normalize_axis, register, same_as_input

def scatter_elements(data: torch.Tensor, axis: int, idx: torch.Tensor, updates: torch.Tensor, reduction: str,
                     what: str = "ScatterElements") -> torch.Tensor:
    axis = normalize_axis(axis, data.dim())
    size = int(data.shape[axis])
    idx, outside = bounded_indices(idx, size, what, axis)
    work = movable(data) if reduction == "none" else to_compute(data, reduction)
    if outside is None:
        work = work.clone()
    else:
        # On a GPU an update outside data goes to a spare slot past the end of the axis, dropped after.
        idx = torch.where(outside, size, idx)
        spare = list(work.shape)
        spare[axis] = 1
        work = torch.cat([work, work.new_zeros(spare)], axis)  # a fresh tensor, as clone() gives
    if reduction == "none":
        work.scatter_(axis, idx, movable(updates))
    else:
        work.scatter_reduce_(axis, idx, to_compute(updates, reduction), SCATTER_REDUCTIONS[reduction], include_self=True)
    if outside is not None:
        work = work.narrow(axis, 0, size).contiguous()
    return work.view(data.dtype) if reduction == "none" else from_compute(work, data.dtype, reduction)


@register
class ScatterElements(Op):
    name = "ScatterElements"
    attrs = {"axis": 0, "reduction": "none"}

    def check(self, node):
        if node.attrs["reduction"] not in ("none", *SCATTER_REDUCTIONS):
            return f"reduction '{node.attrs['reduction']}' is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        return scatter_elements(inputs[0], attrs["axis"], inputs[1], inputs[2], attrs["reduction"])

