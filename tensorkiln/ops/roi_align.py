"""RoiAlign: average or max of bilinear samples over each output bin of each region of interest."""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..ir import Node, TensorType
from ._conv_common import compute_dtype
from .registry import InferContext, Op, register


def _axis_samples(start: float, size: float, bins: int, grid: int, limit: int, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Corner indices [bins, grid, 2] and weights [bins, grid, 2] of the samples along one axis; samples
    beyond [-1, limit] get weight 0 (as in ONNX's reference and onnxruntime)."""
    bin_size = size / bins
    p = torch.arange(bins, dtype=torch.float64).reshape(-1, 1)
    g = torch.arange(grid, dtype=torch.float64).reshape(1, -1)
    pos = start + p * bin_size + (g + 0.5) * bin_size / grid
    valid = (pos >= -1.0) & (pos <= limit)
    pos = pos.clamp(min=0.0)
    low = pos.floor().to(torch.int64)
    at_end = low >= limit - 1
    low = torch.where(at_end, torch.full_like(low, limit - 1), low)
    high = torch.where(at_end, low, low + 1)
    pos = torch.where(at_end, low.to(torch.float64), pos)
    frac = pos - low
    idx = torch.stack([low, high], dim=-1)
    w = torch.stack([1.0 - frac, frac], dim=-1) * valid.unsqueeze(-1)
    return idx.to(device), w.to(device)


@register
class RoiAlign(Op):
    name = "RoiAlign"
    since_opset = 10
    attrs = {"coordinate_transformation_mode": "half_pixel", "mode": "avg", "output_height": 1, "output_width": 1,
             "sampling_ratio": 0, "spatial_scale": 1.0}

    def normalize(self, attrs, opset):
        out = super().normalize(attrs, opset)
        if opset < 16:
            out["coordinate_transformation_mode"] = "output_half_pixel"  # the only behaviour before opset 16
        return out

    def check(self, node: Node) -> Optional[str]:
        if node.attrs.get("mode") not in ("avg", "max"):
            return f"mode '{node.attrs.get('mode')}' is not avg or max"
        if node.attrs.get("coordinate_transformation_mode") not in ("half_pixel", "output_half_pixel"):
            return f"coordinate_transformation_mode '{node.attrs.get('coordinate_transformation_mode')}' is not " \
                   "half_pixel or output_half_pixel"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        if ctx.type(0) is None:
            return [None]
        x, r = ctx.shape(0), ctx.shape(1)
        return [TensorType(ctx.dtype(0), (None if r is None else r[0], None if x is None else x[1],
                                          int(ctx.attrs["output_height"]), int(ctx.attrs["output_width"])))]

    def reference(self, ctx, inputs, attrs):
        x, rois, batch = inputs
        oh, ow = int(attrs["output_height"]), int(attrs["output_width"])
        ratio = int(attrs["sampling_ratio"])
        scale = float(attrs["spatial_scale"])
        half = attrs["coordinate_transformation_mode"] == "half_pixel"
        is_max = attrs["mode"] == "max"
        cd = compute_dtype(x.dtype)
        n, c, h, w = x.shape
        rois_h = rois.detach().to("cpu", torch.float64).tolist()
        batch_h = batch.detach().to("cpu").tolist()
        out = torch.zeros((len(rois_h), c, oh, ow), dtype=cd, device=x.device)
        offset = 0.5 if half else 0.0
        for r, (box, b) in enumerate(zip(rois_h, batch_h)):
            x0, y0, x1, y1 = (v * scale - offset for v in box)
            rw, rh = x1 - x0, y1 - y0
            if not half:
                rw, rh = max(rw, 1.0), max(rh, 1.0)
            gh = ratio if ratio > 0 else int(math.ceil(rh / oh))
            gw = ratio if ratio > 0 else int(math.ceil(rw / ow))
            if gh == 0 or gw == 0:
                continue
            yi, yw = _axis_samples(y0, rh, oh, gh, h, x.device)
            xi, xw = _axis_samples(x0, rw, ow, gw, w, x.device)
            img = x[int(b)].to(cd)
            rows = img.index_select(1, yi.reshape(-1))  # [c, oh*gh*2, w]
            vals = rows.index_select(2, xi.reshape(-1)).reshape(c, oh, gh, 2, ow, gw, 2)
            wt = (yw.reshape(oh, gh, 2, 1, 1, 1) * xw.reshape(1, 1, 1, ow, gw, 2)).to(cd)
            weighted = vals * wt
            if is_max:
                # Per sample, the largest weighted corner; then the largest sample (onnxruntime's definition).
                out[r] = weighted.amax(dim=(3, 6)).amax(dim=(2, 4))
            else:
                out[r] = weighted.sum(dim=(2, 3, 5, 6)) / max(gh * gw, 1)
        return out.to(x.dtype)
