"""CastLike: Cast to the dtype of a second input."""

from __future__ import annotations

from typing import Any, Optional

from ..ir import Node, TensorType
from ._dtype_convert import cast, dtype_of
from .cast import check_cast_attrs
from .registry import InferContext, Op, register


@register
class CastLike(Op):
    name = "CastLike"
    attrs = {"saturate": 1, "round_mode": "up"}

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = super().normalize(attrs, opset)
        mode = out["round_mode"]
        out["round_mode"] = mode.decode() if isinstance(mode, bytes) else str(mode)
        return out

    def check(self, node: Node) -> Optional[str]:
        target = node.inputs[1].type if len(node.inputs) > 1 and node.inputs[1] is not None else None
        return check_cast_attrs(node, None if target is None else target.dtype)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        to = ctx.dtype(1)
        return [None if to is None else TensorType(to, ctx.shape(0))]

    def reference(self, ctx, inputs, attrs):
        # A list: the executor would iterate a bare numpy result (sub-byte dtypes) as outputs.
        return [cast(inputs[0], dtype_of(inputs[1]), ctx.device, bool(attrs["saturate"]), attrs["round_mode"])]
