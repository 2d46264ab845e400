"""QuantizeLinear: y = saturate(round(x / y_scale) + y_zero_point), per tensor, per axis or blocked."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, Node, TensorType
from ._dtype_convert import FLOAT8, cast, dtype_of, to_torch
from .registry import InferContext, Op, normalize_axis, register

INTEGER_RANGES = {
    DType.UINT8: (0, 255), DType.INT8: (-128, 127), DType.UINT16: (0, 65535), DType.INT16: (-32768, 32767),
    DType.UINT4: (0, 15), DType.INT4: (-8, 7), DType.UINT2: (0, 3), DType.INT2: (-2, 1),
}
QUANTIZED = set(INTEGER_RANGES) | set(FLOAT8) | {DType.FLOAT4E2M1}


def expand_quant_param(param: torch.Tensor, x_shape: tuple[int, ...], axis: int, block_size: int) -> torch.Tensor:
    """A scale or zero point shaped to broadcast against x (per tensor, per axis or blocked)."""
    if param.dim() == 0 or param.numel() == 1 and not block_size:
        return param.reshape(())
    rank = len(x_shape)
    axis = normalize_axis(axis, rank)
    if not block_size:
        if param.dim() != 1 or param.shape[0] != x_shape[axis]:
            raise ValueError(f"per-axis parameter of shape {list(param.shape)} does not match axis {axis} "
                             f"of input shape {list(x_shape)}")
        dims = [1] * rank
        dims[axis] = param.shape[0]
        return param.reshape(dims)
    if block_size < 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if param.dim() != rank:
        raise ValueError(f"blocked parameter of shape {list(param.shape)} must have the rank of input "
                         f"shape {list(x_shape)}")
    param = param.repeat_interleave(block_size, dim=axis).narrow(axis, 0, x_shape[axis])
    if tuple(param.shape) != tuple(x_shape):
        raise ValueError(f"blocked parameter does not tile input shape {list(x_shape)} with block_size {block_size}")
    return param


def _output_dtype(zero_point: Optional[DType], output_dtype: int) -> DType:
    if zero_point is not None:
        return zero_point
    return DType(output_dtype) if output_dtype else DType.UINT8


@register
class QuantizeLinear(Op):
    name = "QuantizeLinear"
    since_opset = 10
    attrs = {"axis": 1, "saturate": 1, "block_size": 0, "output_dtype": 0, "precision": 0}

    def check(self, node: Node) -> Optional[str]:
        zp = node.inputs[2].type if len(node.inputs) > 2 and node.inputs[2] is not None else None
        out_dtype = node.attrs["output_dtype"]
        if zp is not None and out_dtype and DType(out_dtype) != zp.dtype:
            return (f"output_dtype {DType(out_dtype).short} differs from the zero point's dtype "
                    f"{zp.dtype.short}")
        target = _output_dtype(None if zp is None else zp.dtype, out_dtype)
        if target not in QUANTIZED:
            return f"quantizing to {target.short} is not supported"
        if node.attrs["precision"] and not DType(node.attrs["precision"]).has_torch:
            return f"precision {DType(node.attrs['precision']).short} is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        zp = ctx.dtype(2) if ctx.has_input(2) else None
        if ctx.has_input(2) and zp is None:
            return [None]
        return [TensorType(_output_dtype(zp, ctx.attrs["output_dtype"]), ctx.shape(0))]

    def reference(self, ctx, inputs, attrs):
        x, scale = inputs[0], to_torch(inputs[1], ctx.device)
        zero_point = inputs[2] if len(inputs) > 2 else None
        target = _output_dtype(None if zero_point is None else dtype_of(zero_point), attrs["output_dtype"])
        axis, block = attrs["axis"], attrs["block_size"]
        scale = expand_quant_param(scale, tuple(x.shape), axis, block)
        if attrs["precision"]:
            compute = DType(attrs["precision"]).torch
        elif not x.is_floating_point():
            compute = torch.float64
        else:
            compute = torch.promote_types(x.dtype, scale.dtype)
        if scale.dtype == torch.float8_e8m0fnu:
            scale = scale.to(torch.float32)
        q = x.to(compute) / scale.to(compute)
        zp = None
        if zero_point is not None:
            zp = expand_quant_param(to_torch(zero_point, ctx.device), tuple(x.shape), axis, block)
        if target in INTEGER_RANGES:
            low, high = INTEGER_RANGES[target]
            qi = torch.round(q).to(torch.float64)
            if zp is not None:
                qi = qi + zp.to(torch.float64)
            qi = qi.clamp(low, high).to(torch.int32)
            return [cast(qi, target, ctx.device)]
        if target == DType.FLOAT4E2M1:
            if zp is not None:
                q = q.to(torch.float32) + zp.to(torch.float32)
            return [cast(q, target, ctx.device)]
        # float8: the zero point only names the type (its value must be 0).
        return [cast(q, target, ctx.device, saturate=bool(attrs["saturate"]))]
