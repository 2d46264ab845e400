"""BitCast: reinterpret each element's bits as another dtype of the same width."""

from __future__ import annotations

from typing import Any, Optional

from ..ir import DType, Node, TensorType
from ._dtype_convert import bit_width, bitcast
from .registry import REQUIRED, InferContext, Op, register


@register
class BitCast(Op):
    name = "BitCast"
    attrs = {"to": REQUIRED}

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = super().normalize(attrs, opset)
        out["to"] = DType(int(out["to"])).value  # validated here, kept as plain data
        return out

    def check(self, node: Node) -> Optional[str]:
        to = DType(node.attrs["to"])
        if to == DType.STRING:
            return "BitCast to string is not defined"
        src = node.inputs[0].type
        if src is not None:
            if src.dtype == DType.STRING:
                return "BitCast from string is not defined"
            if bit_width(src.dtype) != bit_width(to):
                return (f"BitCast needs equal bit widths: {src.dtype.short} has {bit_width(src.dtype)} bits, "
                        f"{to.short} has {bit_width(to)}")
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [TensorType(DType(ctx.attrs["to"]), ctx.shape(0))]

    def reference(self, ctx, inputs, attrs):
        # A list: the executor would iterate a bare numpy result (sub-byte dtypes) as outputs.
        return [bitcast(inputs[0], DType(attrs["to"]), ctx.device)]
