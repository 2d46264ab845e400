"""MaxPool: N-D max pooling with dilations, ceil_mode, auto_pad and the optional argmax output."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, Node, TensorType
from ._conv_common import PoolGeometry, check_pool_attrs, compute_dtype, infer_pool, max_pool_nd
from .registry import InferContext, Op, register


def onnx_indices(torch_idx: torch.Tensor, geo: PoolGeometry, storage_order: int) -> torch.Tensor:
    """Indices into the padded spatial block (torch) -> ONNX's flat indices into the whole unpadded input."""
    padded_sizes = [geo.in_sizes[i] + geo.pad_begins[i] + geo.needed_ends[i] for i in range(geo.nd)]
    rem = torch_idx.to(torch.int64)
    coords = []
    for size in reversed(padded_sizes):
        coords.append(rem % size)
        rem = rem // size
    coords = [c - geo.pad_begins[i] for i, c in enumerate(reversed(coords))]
    flat = torch.zeros_like(rem)
    if storage_order == 1:
        stride = 1
        for i in range(geo.nd):
            flat = flat + coords[i] * stride
            stride *= geo.in_sizes[i]
    else:
        for i in range(geo.nd):
            flat = flat * geo.in_sizes[i] + coords[i]
    n, c = torch_idx.shape[0], torch_idx.shape[1]
    plane = 1
    for s in geo.in_sizes:
        plane *= s
    base = torch.arange(n * c, device=torch_idx.device, dtype=torch.int64).reshape(n, c, *([1] * geo.nd)) * plane
    return flat + base


@register
class MaxPool(Op):
    name = "MaxPool"
    attrs = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None, "kernel_shape": None, "pads": None,
             "storage_order": 0, "strides": None}

    def check(self, node: Node) -> Optional[str]:
        # The reference sees only attrs: whether the Indices output exists is recorded here so
        # that the common single-output MaxPool skips computing argmax positions.
        node.attrs["_indices"] = int(any(v is not None for v in node.outputs[1:]))
        return check_pool_attrs(node.attrs)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        if ctx.type(0) is None:
            return [None] * ctx.num_outputs
        shape = infer_pool(ctx)
        out = [TensorType(ctx.dtype(0), shape)]
        if ctx.num_outputs > 1:
            out.append(TensorType(DType.INT64, shape))
        return out

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        geo = PoolGeometry(list(x.shape[2:]), attrs)
        cd = compute_dtype(x.dtype) if (x.device.type == "cpu" or not x.is_floating_point()) else x.dtype
        # Without the `_indices` record (a plan from before it existed) the indices are computed.
        with_indices = bool(attrs.get("_indices", 1))
        y, idx = max_pool_nd(x.to(cd), geo, with_indices)
        y = y.to(x.dtype)
        if not with_indices:
            return y
        return [y, onnx_indices(idx, geo, int(attrs.get("storage_order") or 0))]
