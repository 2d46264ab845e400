"""ScatterND: write slices of `updates` into a copy of `data` at the coordinate tuples in
the last dim of `indices`, optionally reducing (add 16+, mul 16+, max/min 18+)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._shape_common import SCATTER_REDUCTIONS, bounded_index_tuples, from_compute, movable, to_compute
from .registry import InferContext, Op, register, same_as_input

@register
class ScatterND(Op):
    name = "ScatterND"
    attrs = {"reduction": "none"}

    def check(self, node):
        if node.attrs["reduction"] not in ("none", *SCATTER_REDUCTIONS):
            return f"reduction '{node.attrs['reduction']}' is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        data, idx, updates = inputs[0], inputs[1].to(torch.int64), inputs[2]
        k = int(idx.shape[-1])
        lead = [int(d) for d in data.shape[:k]]
        coords, outside = bounded_index_tuples(idx.reshape(-1, k), lead, "ScatterND")
        # Row-major linear position of each coordinate tuple among the first k dims, with the
        # strides as Python ints (no host-to-device copy: capturable in a CUDA graph).
        linear = torch.zeros(coords.shape[:-1], dtype=torch.int64, device=coords.device)
        for j in range(k):
            linear = linear * lead[j] + coords[:, j]
        rows = 1
        for d in lead:
            rows *= d
        tail = tuple(data.shape[k:])
        # On a GPU an update outside data goes to a spare row past the end, dropped after.
        spare = int(outside is not None)
        if outside is not None:
            linear = torch.where(outside.any(-1), rows, linear)
        reduction = attrs["reduction"]
        if reduction == "none":
            flat = _with_spare_row(movable(data).reshape((rows,) + tail), spare)
            flat[linear] = movable(updates).reshape((-1,) + tail)
            return flat[:rows].view(data.dtype).reshape(data.shape)
        flat = _with_spare_row(to_compute(data, reduction).reshape((rows,) + tail), spare)
        src = to_compute(updates, reduction).reshape((-1,) + tail)
        # Each update row reduces into its data row: the row index spread over the row (index_reduce_
        # computes the same, but torch warns that it is in beta on its first call in every process).
        rows_index = linear.reshape((-1,) + (1,) * len(tail)).expand(src.shape)
        flat.scatter_reduce_(0, rows_index, src, SCATTER_REDUCTIONS[reduction], include_self=True)
        return from_compute(flat[:rows], data.dtype, reduction).reshape(data.shape)


def _with_spare_row(flat: torch.Tensor, spare: int) -> torch.Tensor:
    """A copy of `flat` with `spare` (0 or 1) rows of zeros after its rows."""
    if not spare:
        return flat.clone()
    return torch.cat([flat, flat.new_zeros((spare,) + tuple(flat.shape[1:]))])
