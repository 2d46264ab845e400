"""Binarizer (ai.onnx.ml opset 1): 1 where the input exceeds `threshold`, else 0 (same dtype)."""

from __future__ import annotations

from typing import Optional


from ..ir import TensorType
from .registry import InferContext, Op, register


@register
class Binarizer(Op):
    name = "Binarizer"
    domain = "ai.onnx.ml"
    attrs = {"threshold": 0.0}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [ctx.type(0)]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        return (x > attrs["threshold"]).to(x.dtype)
