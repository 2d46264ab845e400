"""ScatterElements (and its deprecated predecessor Scatter): write `updates` into a copy of
`data` at per-element indices along `axis`, optionally reducing (add 16+, mul 16+, max/min 18+)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._shape_common import from_compute, movable, to_compute, wrap_indices
from .registry import InferContext, Op, normalize_axis, register, same_as_input

# ONNX reduction -> torch.scatter_reduce reduction
_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def scatter_elements(data: torch.Tensor, axis: int, idx: torch.Tensor, updates: torch.Tensor, reduction: str
                     ) -> torch.Tensor:
    axis = normalize_axis(axis, data.dim())
    idx = wrap_indices(idx, int(data.shape[axis]))
    if reduction == "none":
        return movable(data).scatter(axis, idx, movable(updates)).view(data.dtype)
    work = to_compute(data, reduction).scatter_reduce(axis, idx, to_compute(updates, reduction), _REDUCE[reduction],
                                                      include_self=True)
    return from_compute(work, data.dtype, reduction)


@register
class ScatterElements(Op):
    name = "ScatterElements"
    attrs = {"axis": 0, "reduction": "none"}

    def check(self, node):
        if node.attrs["reduction"] not in ("none", *_REDUCE):
            return f"reduction '{node.attrs['reduction']}' is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        return scatter_elements(inputs[0], attrs["axis"], inputs[1], inputs[2], attrs["reduction"])

