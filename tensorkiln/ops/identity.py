"""Identity: the input, unchanged (tensors, and whatever else flows through: optionals, sequences)."""

from __future__ import annotations

from typing import Optional

from ..ir import TensorType
from .registry import InferContext, Op, register, same_as_input


@register
class Identity(Op):
    name = "Identity"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        return [inputs[0]]
