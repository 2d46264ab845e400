"""ConstantOfShape: a tensor of the given shape filled with the one-element `value`
(default float32 zero)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..ir import DType, TensorType, numpy_to_torch
from ._shape_common import movable
from .registry import InferContext, Op, as_tuple, register


def fill_value(attrs: dict) -> np.ndarray:
    value = attrs.get("value")
    if value is None:
        return np.zeros((1,), dtype=np.float32)
    value = np.asarray(value)
    if value.size != 1:
        raise ValueError(f"ConstantOfShape value must have one element, not {value.size}")
    return value.reshape(1)


@register
class ConstantOfShape(Op):
    host_inputs = (0,)
    name = "ConstantOfShape"
    attrs = {"value": None}

    def check(self, node):
        try:
            fill = fill_value(node.attrs)
        except ValueError as exc:
            return str(exc)
        if fill.dtype == object or not DType.from_numpy(fill.dtype).has_torch:
            return f"fill value of dtype {fill.dtype} is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        dtype = DType.from_numpy(fill_value(ctx.attrs).dtype)
        dims = ctx.const_ints(0)
        if dims is not None:
            return [TensorType(dtype, tuple(dims))]
        s = ctx.shape(0)
        if s is not None and len(s) == 1 and isinstance(s[0], int):
            return [TensorType(dtype, (None,) * s[0])]
        return [TensorType(dtype, None)]

    def reference(self, ctx, inputs, attrs):
        fill = numpy_to_torch(fill_value(attrs)).reshape(())
        shape = as_tuple(inputs[0]) if inputs[0].numel() else []
        # Filled on the device from a number: copying the value there at every call would be a
        # host-to-device copy, which CUDA-graph capture refuses. Types torch cannot fill (unsigned,
        # float8) are filled through the signed integer of the same width, bit for bit.
        alias = movable(fill)
        out = torch.full(shape, alias.item(), dtype=alias.dtype, device=ctx.device)
        return out if alias.dtype == fill.dtype else out.view(fill.dtype)
