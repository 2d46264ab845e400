"""Split: cut along `axis` into pieces.

Sizes come from the `split` attribute (opset 1-12; opset 1 also took them as a second
input), the `split` input (13+), or are equal parts: exact division before opset 18,
`num_outputs` with a smaller last piece since.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ..ir.shape import Dim
from .registry import InferContext, Op, as_tuple, normalize_axis, register


def equal_split(dim: int, parts: int, uneven: bool) -> list[int]:
    if uneven:
        chunk = -(-dim // parts)
        sizes = [chunk] * (parts - 1)
        return sizes + [dim - chunk * (parts - 1)]
    if dim % parts:
        raise ValueError(f"cannot split a dim of {dim} into {parts} equal parts")
    return [dim // parts] * parts


@register
class Split(Op):
    host_inputs = (1,)
    name = "Split"
    attrs = {"axis": 0, "split": None, "num_outputs": None}

    def check(self, node):
        has_sizes = node.attrs.get("split") is not None or (len(node.inputs) > 1 and node.inputs[1] is not None)
        if not has_sizes and node.attrs.get("num_outputs") is None:
            # Equal parts by output count (before opset 18): the reference sees only attrs,
            # so the count is recorded in the attribute opset 18 made for it.
            node.attrs["num_outputs"] = len(node.outputs)
        return None

    def _sizes(self, ctx: InferContext, dim: Dim) -> Optional[list[int]]:
        if ctx.attrs.get("split") is not None:
            return list(ctx.attrs["split"])
        if ctx.has_input(1):
            return ctx.const_ints(1)
        if not isinstance(dim, int):
            return None
        n = ctx.attrs.get("num_outputs") or ctx.num_outputs
        return equal_split(dim, n, ctx.opset >= 18)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None] * ctx.num_outputs
        if t.shape is None:
            return [TensorType(t.dtype, None)] * ctx.num_outputs
        axis = normalize_axis(ctx.attrs["axis"], len(t.shape))
        sizes = self._sizes(ctx, t.shape[axis])
        out = []
        for i in range(ctx.num_outputs):
            dims = list(t.shape)
            dims[axis] = sizes[i] if sizes is not None and i < len(sizes) else None
            out.append(TensorType(t.dtype, tuple(dims)))
        return out

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        axis = normalize_axis(attrs["axis"], x.dim())
        if attrs.get("split") is not None:
            sizes = [int(s) for s in attrs["split"]]
        elif len(inputs) > 1 and inputs[1] is not None:
            sizes = as_tuple(inputs[1])
        else:
            sizes = equal_split(int(x.shape[axis]), int(attrs["num_outputs"]), True)
        if sum(sizes) != x.shape[axis]:
            raise ValueError(f"split sizes {sizes} do not add up to the dim {x.shape[axis]}")
        return list(torch.split(x, sizes, dim=axis))
