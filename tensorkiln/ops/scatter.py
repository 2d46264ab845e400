"""Scatter (opset 9-10, deprecated in 11 for ScatterElements): the same without reductions."""

from __future__ import annotations

from typing import Optional

from ..ir import TensorType
from .registry import InferContext, Op, register, same_as_input
from .scatter_elements import scatter_elements


@register
class Scatter(Op):
    name = "Scatter"
    attrs = {"axis": 0}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return same_as_input(ctx)

    def reference(self, ctx, inputs, attrs):
        return scatter_elements(inputs[0], attrs["axis"], inputs[1], inputs[2], "none", "Scatter")
