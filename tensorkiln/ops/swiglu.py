"""SwiGLU: Y = A * sigmoid(alpha * A) * B (the gated FFN activation of Llama-style models)."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from .registry import InferContext, Op, register


@register
class SwiGLU(Op):
    name = "SwiGLU"
    attrs = {"alpha": 1.0}

    def check(self, node: Node) -> Optional[str]:
        a, b = node.inputs[0].type, node.inputs[1].type
        if a is not None and b is not None and a.shape is not None and b.shape is not None:
            if len(a.shape) != len(b.shape) or any(
                    isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a.shape, b.shape)):
                return f"A and B must have identical shapes (no broadcasting), got {a.shape} and {b.shape}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [ctx.type(0)]

    def reference(self, ctx, inputs, attrs):
        a, b = inputs[0], inputs[1]
        if a.shape != b.shape:
            raise ValueError(f"SwiGLU needs A and B of identical shapes, got {list(a.shape)} and {list(b.shape)}")
        # The sigmoid is rounded to the input type before the products, as ONNX's Swish does.
        gate = torch.sigmoid(a * attrs["alpha"]).to(a.dtype)
        return (a * gate * b).to(a.dtype)
