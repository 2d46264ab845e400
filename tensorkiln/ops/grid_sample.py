"""GridSample: sample an input at grid locations (nearest, linear, cubic; zeros/border/reflection
padding), 2-D and 3-D (cubic: 2-D only)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..ir import Node, TensorType
from .registry import InferContext, Op, register

_MODES = {"bilinear": "bilinear", "linear": "bilinear", "nearest": "nearest", "bicubic": "bicubic",
          "cubic": "bicubic"}
_PADDING = ("zeros", "border", "reflection")


def _clamp_outside_border(grid: torch.Tensor, sizes: list[int], align_corners: bool) -> torch.Tensor:
    """ONNX clamps a cubic sample point lying outside the border region to the edge pixels before
    taking its 4 taps (torch only clamps the taps): move such points onto the edge first."""
    cols = []
    for i in range(grid.shape[-1]):
        size = sizes[len(sizes) - 1 - i]  # grid coordinates are (x, y[, z]): innermost dim first
        g = grid[..., i]
        if align_corners:
            if size == 1:
                cols.append(g)
                continue
            pos, lo, hi = (g + 1) / 2 * (size - 1), 0.0, size - 1.0
        else:
            pos, lo, hi = ((g + 1) * size - 1) / 2, -0.5, size - 0.5
        outside = (pos < lo) | (pos > hi)
        pos = torch.where(outside, pos.clamp(0, size - 1), pos)
        cols.append(2 * pos / (size - 1) - 1 if align_corners else (2 * pos + 1) / size - 1)
    return torch.stack(cols, dim=-1)


@register
class GridSample(Op):
    name = "GridSample"
    attrs = {"align_corners": 0, "mode": "bilinear", "padding_mode": "zeros"}

    def normalize(self, attrs, opset):
        out = super().normalize(attrs, opset)
        if "mode" not in attrs and opset >= 20:
            out["mode"] = "linear"
        return out

    def check(self, node: Node) -> Optional[str]:
        mode = node.attrs.get("mode")
        if mode not in _MODES:
            return f"mode '{mode}' is not one of {', '.join(_MODES)}"
        if node.attrs.get("padding_mode") not in _PADDING:
            return f"padding_mode '{node.attrs.get('padding_mode')}' is not one of {', '.join(_PADDING)}"
        rank = node.inputs[0].type.rank if node.inputs[0].type is not None else None
        if rank is not None and rank not in (4, 5):
            return f"{rank - 2}-D GridSample is not supported (2-D and 3-D are)"
        if rank == 5 and _MODES[mode] == "bicubic":
            return "cubic GridSample is supported for 2-D inputs only"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        x, g = ctx.shape(0), ctx.shape(1)
        if ctx.type(0) is None:
            return [None]
        if x is None or g is None:
            return [TensorType(ctx.dtype(0), None)]
        return [TensorType(ctx.dtype(0), (x[0], x[1], *g[1:-1]))]

    def reference(self, ctx, inputs, attrs):
        x, grid = inputs
        cd = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        if x.dtype == torch.float64:
            cd = torch.float64
        mode = _MODES[attrs["mode"]]
        grid = grid.to(cd)
        if mode == "bicubic" and attrs["padding_mode"] == "border":
            grid = _clamp_outside_border(grid, list(x.shape[2:]), bool(attrs["align_corners"]))
        y = F.grid_sample(x.to(cd), grid, mode=mode, padding_mode=attrs["padding_mode"],
                          align_corners=bool(attrs["align_corners"]))
        return y.to(x.dtype)
