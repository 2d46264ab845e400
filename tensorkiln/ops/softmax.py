"""Softmax, and the axis rule it shares with LogSoftmax and Hardmax.

Before opset 13 these ops flatten the input to 2-D at `axis` (default 1) and normalize
each row over all the trailing dims; from opset 13 they normalize along the one `axis`
(default -1). Half-precision inputs are computed in float32 and cast back.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..ir import DType, TensorType
from .registry import InferContext, Op, normalize_axis, register

FLOAT_DTYPES = frozenset({DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64})


def apply_along_axis(x: torch.Tensor, axis: int, opset: int, fn: Callable[[torch.Tensor, int], torch.Tensor]
                     ) -> torch.Tensor:
    """fn(t, dim) applied the way opset `opset` defines the axis: one dim (>= 13) or the
    trailing dims from `axis` flattened into one (< 13)."""
    if x.dim() == 0:
        return fn(x.reshape(1), 0).reshape(())
    axis = normalize_axis(axis, x.dim())
    if opset >= 13:
        return fn(x, axis)
    rows = 1
    for d in x.shape[:axis]:
        rows *= d
    return fn(x.reshape(rows, -1), 1).reshape(x.shape)


def accumulate_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (numerically sensitive ops), else the input's dtype."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


class AxisNormOp(Op):
    """Base of Softmax/LogSoftmax/Hardmax: the axis default and flattening depend on opset."""
    accumulates_in_fp32 = True  # half-precision inputs are computed in float32 (tests/test_precision.py)

    fn: Callable[[torch.Tensor, int], torch.Tensor]

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = dict(attrs)
        out.setdefault("axis", -1 if opset >= 13 else 1)
        # The reference needs the opset to pick the axis rule; it sees only attrs.
        out["_flatten"] = int(opset < 13)
        return out

    def check(self, node) -> Optional[str]:
        dt = node.inputs[0].dtype
        if dt is not None and dt not in FLOAT_DTYPES:
            return f"{self.name} of {dt.short} tensors is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is not None and t.shape is not None and len(t.shape) > 0:
            normalize_axis(int(ctx.attrs["axis"]), len(t.shape))
        return [t]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        opset = 1 if attrs.get("_flatten") else 13
        return apply_along_axis(x, int(attrs["axis"]), opset, type(self).fn)


def _softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.softmax(x, dim, dtype=accumulate_dtype(x)).to(x.dtype)


@register
class Softmax(AxisNormOp):
    name = "Softmax"
    fn = staticmethod(_softmax)
