"""Cast: convert every element to the dtype named by `to` (ONNX rules in `_dtype_convert`)."""

from __future__ import annotations

from typing import Any, Optional

from ..ir import DType, Node, TensorType
from ._dtype_convert import ROUND_MODES, cast
from .registry import REQUIRED, InferContext, Op, register


def check_cast_attrs(node: Node, to: Optional[DType]) -> Optional[str]:
    """The reason a Cast/CastLike node cannot run, or None."""
    mode = node.attrs.get("round_mode", "up")
    if mode not in ROUND_MODES:
        return f"round_mode '{mode}' is not one of {', '.join(ROUND_MODES)}"
    if to is not None and to in (DType.COMPLEX64, DType.COMPLEX128):
        return f"cast to {to.short} is not supported"
    return None


@register
class Cast(Op):
    name = "Cast"
    # `saturate` arrived in opset 19 and `round_mode` in opset 24; their defaults give the
    # older opsets' behaviour, so one set of defaults serves every version.
    attrs = {"to": REQUIRED, "saturate": 1, "round_mode": "up"}

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = super().normalize(attrs, opset)
        to = out["to"]
        # Opset 1 names the type ("FLOAT"); later opsets give its code. Kept as the code so
        # attributes stay plain data (they are written into engine files).
        out["to"] = (DType.parse(to.decode() if isinstance(to, bytes) else to) if isinstance(to, (str, bytes))
                     else DType(int(to))).value
        mode = out["round_mode"]
        out["round_mode"] = mode.decode() if isinstance(mode, bytes) else str(mode)
        return out

    def check(self, node: Node) -> Optional[str]:
        return check_cast_attrs(node, DType(node.attrs["to"]))

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [TensorType(DType(ctx.attrs["to"]), ctx.shape(0))]

    def reference(self, ctx, inputs, attrs):
        # A list: the executor would iterate a bare numpy result (sub-byte dtypes) as outputs.
        return [cast(inputs[0], DType(attrs["to"]), ctx.device, bool(attrs["saturate"]), attrs["round_mode"])]
