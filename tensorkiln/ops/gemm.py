"""Gemm: Y = alpha * A' @ B' + beta * C, with A' = A^T if transA, B' = B^T if transB.

Opset < 7 has a `broadcast` attribute; with broadcast=0 C must already be [M, N], which
the broadcasting path computes identically, so both forms share one implementation.
C is required before opset 11 and optional after.
"""

from __future__ import annotations

from typing import Any, Optional


from ..ir import TensorType
from .matmul import MATMUL_DTYPES, matmul
from .registry import InferContext, Op, register


@register
class Gemm(Op):
    name = "Gemm"
    attrs = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = super().normalize(attrs, opset)
        out.pop("broadcast", None)
        out.pop("consumed_inputs", None)
        return out

    def check(self, node) -> Optional[str]:
        dt = node.inputs[0].dtype
        if dt is not None and dt not in MATMUL_DTYPES:
            return f"Gemm of {dt.short} tensors is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        a, b = ctx.type(0), ctx.type(1)
        if a is None:
            return [None]
        if a.shape is None or b is None or b.shape is None:
            return [TensorType(a.dtype, None)]
        if len(a.shape) != 2 or len(b.shape) != 2:
            raise ValueError(f"Gemm operands must be 2-D, got ranks {len(a.shape)} and {len(b.shape)}")
        m = a.shape[1] if ctx.attrs.get("transA") else a.shape[0]
        n = b.shape[0] if ctx.attrs.get("transB") else b.shape[1]
        return [TensorType(a.dtype, (m, n))]

    def reference(self, ctx, inputs, attrs):
        a, b = inputs[0], inputs[1]
        c = inputs[2] if len(inputs) > 2 else None
        if attrs["transA"]:
            a = a.transpose(0, 1)
        if attrs["transB"]:
            b = b.transpose(0, 1)
        alpha, beta = float(attrs["alpha"]), float(attrs["beta"])
        y = matmul(a, b)
        if not a.is_floating_point():
            # Integer Gemm scales in double and truncates back, as the ONNX reference does.
            if alpha != 1.0:
                y = (y.double() * alpha).to(a.dtype)
            if c is not None and beta != 0.0:
                y = (y.double() + c.double() * beta).to(a.dtype) if beta != 1.0 else y + c.to(a.dtype)
            return y
        if alpha != 1.0:
            y = y * alpha
        if c is not None and beta != 0.0:
            y = y + (c.to(y.dtype) if beta == 1.0 else c.to(y.dtype) * beta)
        return y.to(a.dtype)
