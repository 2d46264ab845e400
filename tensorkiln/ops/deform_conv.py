"""DeformConv (2-D): convolution whose taps are moved by learned offsets (bilinear sampling, zeros
outside the input) and optionally scaled by a mask."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from ._conv_common import compute_dtype, ints_or
from .registry import InferContext, Op, register


def _bilinear_zeros(img: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Sample img [n, c, h, w] at coordinates ys, xs [n, p]; corners outside the image count as 0."""
    n, c, h, w = img.shape
    y0, x0 = torch.floor(ys), torch.floor(xs)
    flat = img.reshape(n, c, h * w)
    out = torch.zeros((n, c, ys.shape[1]), dtype=img.dtype, device=img.device)
    for dy in (0, 1):
        for dx in (0, 1):
            yc, xc = y0 + dy, x0 + dx
            wy = 1 - (ys - yc).abs()
            wx = 1 - (xs - xc).abs()
            inside = (yc >= 0) & (yc <= h - 1) & (xc >= 0) & (xc <= w - 1)
            idx = (yc.clamp(0, h - 1) * w + xc.clamp(0, w - 1)).to(torch.int64)
            vals = torch.gather(flat, 2, idx.unsqueeze(1).expand(n, c, -1))
            out = out + vals * (wy * wx * inside).unsqueeze(1)
    return out


@register
class DeformConv(Op):
    name = "DeformConv"
    attrs = {"dilations": None, "group": 1, "kernel_shape": None, "offset_group": 1, "pads": None, "strides": None}

    def check(self, node: Node) -> Optional[str]:
        t = node.inputs[0].type
        if t is not None and t.rank is not None and t.rank != 4:
            return f"{t.rank - 2}-D DeformConv is not supported (2-D is)"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        if ctx.type(0) is None:
            return [None]
        x, wt, off = ctx.shape(0), ctx.shape(1), ctx.shape(2)
        if x is None or off is None:
            return [TensorType(ctx.dtype(0), None)]
        return [TensorType(ctx.dtype(0), (x[0], None if wt is None else wt[0], *off[2:]))]

    def reference(self, ctx, inputs, attrs):
        x, wt, off = inputs[0], inputs[1], inputs[2]
        bias = inputs[3] if len(inputs) > 3 else None
        mask = inputs[4] if len(inputs) > 4 else None
        cd = torch.float64 if x.dtype == torch.float64 else torch.float32 if x.device.type == "cpu" else \
            compute_dtype(x.dtype)
        n, c, _, _ = x.shape
        oc, cpg, kh, kw = wt.shape
        oh, ow = off.shape[2], off.shape[3]
        group, og = int(attrs.get("group") or 1), int(attrs.get("offset_group") or 1)
        sh, sw = ints_or(attrs.get("strides"), 1, 2)
        dh, dw = ints_or(attrs.get("dilations"), 1, 2)
        pads = ints_or(attrs.get("pads"), 0, 4)
        k = kh * kw
        dev = x.device
        off = off.to(cd).reshape(n, og, kh, kw, 2, oh, ow)
        base_y = (torch.arange(oh, device=dev, dtype=cd) * sh - pads[0]).reshape(1, 1, oh, 1) \
            + (torch.arange(kh, device=dev, dtype=cd) * dh).reshape(kh, 1, 1, 1)
        base_x = (torch.arange(ow, device=dev, dtype=cd) * sw - pads[1]).reshape(1, 1, 1, ow) \
            + (torch.arange(kw, device=dev, dtype=cd) * dw).reshape(1, kw, 1, 1)
        cols = []
        xc = x.to(cd)
        cpog = c // og
        for g in range(og):
            ys = (base_y + off[:, g, :, :, 0]).reshape(n, -1)  # [n, kh*kw*oh*ow]
            xs = (base_x + off[:, g, :, :, 1]).reshape(n, -1)
            sampled = _bilinear_zeros(xc[:, g * cpog:(g + 1) * cpog], ys, xs).reshape(n, cpog, k, oh * ow)
            if mask is not None:
                sampled = sampled * mask.to(cd).reshape(n, og, k, oh * ow)[:, g].unsqueeze(1)
            cols.append(sampled)
        col = torch.cat(cols, dim=1).reshape(n, group, cpg * k, oh * ow)
        wg = wt.to(cd).reshape(group, oc // group, cpg * k)
        y = torch.einsum("gok,ngkp->ngop", wg, col).reshape(n, oc, oh, ow)
        if bias is not None:
            y = y + bias.to(cd).reshape(1, -1, 1, 1)
        return y.to(x.dtype)
