"""Col2Im: sum sliding blocks (columns) back into an N-D image (the inverse layout of im2col)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from ._conv_common import ints_or
from .registry import InferContext, Op, register


@register
class Col2Im(Op):
    name = "Col2Im"
    # The image and block shapes are read on the host: constants stay there (no device sync, capturable).
    host_inputs = (1, 2)
    attrs = {"dilations": None, "pads": None, "strides": None}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        image = ctx.const_ints(1)
        block = ctx.const_ints(2)
        if image is None or block is None or t.shape is None:
            n = None if t.shape is None else t.shape[0]
            return [TensorType(t.dtype, None if image is None else (n, None, *image))]
        cb = t.shape[1]
        nblock = 1
        for b in block:
            nblock *= b
        return [TensorType(t.dtype, (t.shape[0], cb // nblock if isinstance(cb, int) else None, *image))]

    def reference(self, ctx, inputs, attrs):
        cols, image_t, block_t = inputs
        image = [int(v) for v in image_t.reshape(-1).tolist()]
        block = [int(v) for v in block_t.reshape(-1).tolist()]
        nd = len(image)
        strides = ints_or(attrs.get("strides"), 1, nd)
        dilations = ints_or(attrs.get("dilations"), 1, nd)
        pads = ints_or(attrs.get("pads"), 0, 2 * nd)
        padded = [image[i] + pads[i] + pads[nd + i] for i in range(nd)]
        counts = [(padded[i] - ((block[i] - 1) * dilations[i] + 1)) // strides[i] + 1 for i in range(nd)]
        dev = cols.device
        # Flat index into the padded image of every (block offset, block position) pair.
        index = torch.zeros((1, 1), dtype=torch.int64, device=dev)
        for i in range(nd):
            k = torch.arange(block[i], device=dev) * dilations[i]
            p = torch.arange(counts[i], device=dev) * strides[i]
            index = (index.reshape(-1, 1, index.shape[-1], 1) * padded[i]
                     + k.reshape(1, -1, 1, 1) + p.reshape(1, 1, 1, -1)).reshape(
                         index.shape[0] * block[i], index.shape[-1] * counts[i])
        n, cb, length = cols.shape
        nblock = index.shape[0]
        c = cb // nblock
        total = 1
        for s in padded:
            total *= s
        src = cols.reshape(n, c, nblock * length)
        out = torch.zeros((n, c, total), dtype=cols.dtype, device=dev)
        out.scatter_add_(2, index.reshape(1, 1, -1).expand(n, c, -1), src)
        out = out.reshape(n, c, *padded)
        crop = tuple(slice(pads[i], pads[i] + image[i]) for i in range(nd))
        return out[(slice(None), slice(None)) + crop].contiguous()
