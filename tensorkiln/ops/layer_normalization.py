"""LayerNormalization (opset 17): normalize over the dims from `axis` to the last, then
scale and shift.

    Y = (X - mean) * InvStdDev * Scale + B,  InvStdDev = 1 / sqrt(var + epsilon)

The statistics are computed in the `stash_type` dtype (float32 by default, so float16
and bfloat16 inputs accumulate in float32); the optional Mean and InvStdDev outputs have
that dtype and X's shape with the normalized dims set to 1.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, TensorType
from .registry import InferContext, Op, normalize_axis, register

_FLOATS = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)


def stash_dtype(code: int) -> DType:
    try:
        dt = DType(int(code))
    except ValueError:
        raise ValueError(f"stash_type {code} is not a dtype") from None
    if dt not in _FLOATS:
        raise ValueError(f"stash_type {dt.short} is not a floating-point dtype")
    return dt


def check_float_input(op_name: str, node) -> Optional[str]:
    dt = node.inputs[0].dtype
    if dt is not None and dt not in _FLOATS:
        return f"{op_name} of {dt.short} tensors is not supported"
    try:
        stash_dtype(node.attrs.get("stash_type", 1))
    except ValueError as exc:
        return str(exc)
    return None


def statistics_shape(shape, axis: int):
    """X's shape with the normalized dims (axis..rank-1) set to 1."""
    return tuple(d if i < axis else 1 for i, d in enumerate(shape))


@register
class LayerNormalization(Op):
    name = "LayerNormalization"
    accumulates_in_fp32 = True  # half-precision inputs are computed in float32 (tests/test_precision.py)
    attrs = {"axis": -1, "epsilon": 1e-5, "stash_type": 1}

    def check(self, node) -> Optional[str]:
        return check_float_input(self.name, node)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None] * ctx.num_outputs
        stash = stash_dtype(ctx.attrs["stash_type"])
        stats_shape = None
        if t.shape is not None:
            axis = normalize_axis(int(ctx.attrs["axis"]), len(t.shape))
            stats_shape = statistics_shape(t.shape, axis)
        return [t, TensorType(stash, stats_shape), TensorType(stash, stats_shape)][:ctx.num_outputs]

    def reference(self, ctx, inputs, attrs):
        x, scale = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        compute = stash_dtype(attrs["stash_type"]).torch
        axis = normalize_axis(int(attrs["axis"]), x.dim())
        dims = list(range(axis, x.dim()))
        xc = x.to(compute)
        mean = xc.mean(dim=dims, keepdim=True)
        centered = xc - mean
        var = (centered * centered).mean(dim=dims, keepdim=True)
        inv_std = torch.rsqrt(var + float(attrs["epsilon"]))
        # The affine part runs in the wider of the two dtypes, then Y returns to X's dtype.
        wide = compute if compute.itemsize >= x.dtype.itemsize else x.dtype
        y = (centered * inv_std).to(wide) * scale.to(wide)
        if bias is not None:
            y = y + bias.to(wide)
        return [y.to(x.dtype), mean, inv_std]
