"""Clip: clamp to [min, max]; where min > max every element becomes max.

Opsets 1-10 give the bounds as float attributes (unbounded by default in opset 1,
+-FLT_MAX from opset 6); from opset 11 they are optional scalar inputs of x's dtype, and
integer dtypes are allowed from opset 12.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..ir import DType, TensorType
from ._ordered import ordered, unordered
from .registry import InferContext, Op, register, same_as_input

_FLT_MAX = 3.4028234663852886e38


def clamp(x: torch.Tensor, low: Optional[torch.Tensor], high: Optional[torch.Tensor]) -> torch.Tensor:
    """max(x, low) then min(., high): the order that makes high win when low > high."""
    if ordered(x) is not x:
        def as_ordered(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else ordered(_operand(t, x))
        return unordered(clamp(ordered(x), as_ordered(low), as_ordered(high)), x.dtype)
    if low is not None:
        x = torch.maximum(x, _operand(low, x))
    if high is not None:
        x = torch.minimum(x, _operand(high, x))
    return x


def _operand(bound: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`bound` in x's dtype, ready for a binary op with x. A scalar bound on the host (an opset<11
    attribute, a host value) stays there: torch hands a CPU scalar to a GPU kernel by value, where
    a copy to the device at every call would be a host-to-device copy CUDA-graph capture refuses."""
    if bound.dim() == 0 and bound.device.type == "cpu":
        return bound.to(dtype=x.dtype)
    return bound.to(device=x.device, dtype=x.dtype)


@register
class Clip(Op):
    name = "Clip"

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = {k: v for k, v in attrs.items() if k in ("min", "max")}
        if opset < 11:
            default_low, default_high = (None, None) if opset < 6 else (-_FLT_MAX, _FLT_MAX)
            out.setdefault("min", default_low)
            out.setdefault("max", default_high)
        return out

    def check(self, node) -> Optional[str]:
        dt = node.inputs[0].dtype
        if dt is not None and not (dt.has_torch and (dt.is_integer or dt in (DType.FLOAT32, DType.FLOAT16,
                                                                               DType.BFLOAT16, DType.FLOAT64))):
            return f"Clip of {dt.short} tensors is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        low = inputs[1] if len(inputs) > 1 else None
        high = inputs[2] if len(inputs) > 2 else None
        if low is None and attrs.get("min") is not None:
            low = torch.tensor(float(attrs["min"]), dtype=torch.float64)
        if high is None and attrs.get("max") is not None:
            high = torch.tensor(float(attrs["max"]), dtype=torch.float64)
        return clamp(x, low, high)
