"""Pad: constant, reflect, edge and wrap (opset 19+) padding; negative pads crop.

Before opset 11 pads and value are attributes (`paddings` in opset 1); since, the pads
and constant value are inputs, and opset 18 added an `axes` input naming which axes the
pads cover. Pads are laid out ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..ir import TensorType
from ..ir.shape import Dim
from ._shape_common import normalize_axes
from .registry import InferContext, Op, as_tuple, register

MODES = ("constant", "reflect", "edge", "wrap")


def full_pads(pads: Sequence[int], axes: Optional[Sequence[int]], rank: int) -> list[tuple[int, int]]:
    """(begin, end) for every axis of the input."""
    axes = list(range(rank)) if axes is None else normalize_axes(axes, rank)
    if len(pads) != 2 * len(axes):
        raise ValueError(f"Pad has {len(pads)} pads for {len(axes)} axes (needs two per axis)")
    out = [(0, 0)] * rank
    for i, a in enumerate(axes):
        out[a] = (int(pads[i]), int(pads[i + len(axes)]))
    return out


def _source_positions(n: int, begin: int, end: int, mode: str, device: torch.device) -> torch.Tensor:
    """For each output position along one axis, the input position it copies."""
    pos = torch.arange(-begin, n + end, device=device, dtype=torch.int64)
    if mode == "edge":
        return pos.clamp(0, n - 1)
    if mode == "wrap":
        return torch.remainder(pos, n)
    period = 2 * (n - 1)
    if period == 0:
        return torch.zeros_like(pos)
    pos = torch.remainder(pos, period)
    return torch.where(pos >= n, period - pos, pos)


def pad_tensor(x: torch.Tensor, pads: list[tuple[int, int]], mode: str, value: Any) -> torch.Tensor:
    # Cropping first: the remaining pads are all non-negative.
    crop = tuple(slice(max(-b, 0), int(x.shape[i]) - max(-e, 0)) for i, (b, e) in enumerate(pads))
    x = x[crop]
    pads = [(max(b, 0), max(e, 0)) for b, e in pads]
    if all(b == 0 and e == 0 for b, e in pads):
        return x
    if mode == "constant":
        shape = [int(d) + b + e for d, (b, e) in zip(x.shape, pads)]
        out = torch.full(shape, value, dtype=x.dtype, device=x.device)
        out[tuple(slice(b, b + int(d)) for d, (b, _) in zip(x.shape, pads))] = x
        return out
    for axis, (b, e) in enumerate(pads):
        if b == 0 and e == 0:
            continue
        n = int(x.shape[axis])
        if n == 0:
            raise ValueError(f"cannot {mode}-pad axis {axis}, which is empty")
        x = x.index_select(axis, _source_positions(n, b, e, mode, x.device))
    return x


@register
class Pad(Op):
    host_inputs = (1, 2, 3)
    name = "Pad"
    attrs = {"mode": "constant", "pads": None, "value": 0.0}

    def normalize(self, attrs, opset):
        if "paddings" in attrs:
            attrs = {**attrs, "pads": attrs.pop("paddings")}
        return super().normalize(attrs, opset)

    def check(self, node):
        mode = node.attrs.get("mode", "constant")
        if mode not in MODES or (mode == "wrap" and node.opset < 19):
            return f"Pad mode '{mode}' is not supported"
        if node.opset < 11 and node.attrs.get("pads") is None:
            return "Pad before opset 11 needs the 'pads' attribute"
        return None

    def _pads(self, ctx: InferContext, rank: int) -> Optional[list[tuple[int, int]]]:
        if ctx.attrs.get("pads") is not None:
            return full_pads(ctx.attrs["pads"], None, rank)
        pads = ctx.const_ints(1)
        if pads is None:
            return None
        axes = None
        if ctx.has_input(3):
            axes = ctx.const_ints(3)
            if axes is None:
                return None
        return full_pads(pads, axes, rank)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if t.shape is None:
            return [TensorType(t.dtype, None)]
        pads = self._pads(ctx, len(t.shape))
        if pads is None:
            return [TensorType(t.dtype, (None,) * len(t.shape))]
        dims: list[Dim] = []
        for d, (b, e) in zip(t.shape, pads):
            if b == 0 and e == 0:
                dims.append(d)
            else:
                dims.append(d + b + e if isinstance(d, int) else None)
        return [TensorType(t.dtype, tuple(dims))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        if attrs.get("pads") is not None:
            pads = full_pads(attrs["pads"], None, x.dim())
            value: Any = attrs.get("value", 0.0)
        else:
            axes = as_tuple(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
            pads = full_pads(as_tuple(inputs[1]), axes, x.dim())
            value = 0
            if len(inputs) > 2 and inputs[2] is not None and inputs[2].numel() > 0:
                value = inputs[2].reshape(-1)[0].item()
        if x.dtype == torch.bool:
            value = bool(value)
        elif not x.is_floating_point() and not x.is_complex():
            value = int(value)
        return pad_tensor(x, pads, attrs["mode"], value)
