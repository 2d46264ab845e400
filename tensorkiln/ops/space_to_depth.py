"""SpaceToDepth: move spatial blocks into channels (the inverse of DepthToSpace, DCR or CRD order)."""

from __future__ import annotations

from typing import Optional

from ..ir import Node, TensorType
from .registry import InferContext, Op, register


@register
class SpaceToDepth(Op):
    name = "SpaceToDepth"
    attrs = {"blocksize": None, "mode": "DCR"}  # mode since opset 28

    def check(self, node: Node) -> Optional[str]:
        if node.attrs.get("mode") not in ("DCR", "CRD"):
            return f"mode '{node.attrs.get('mode')}' is not DCR or CRD"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None or t.shape is None:
            return [t]
        b = int(ctx.attrs["blocksize"])
        n, c, h, w = t.shape
        div = lambda d, k: d // k if isinstance(d, int) else None  # noqa: E731
        return [TensorType(t.dtype, (n, c * b * b if isinstance(c, int) else None, div(h, b), div(w, b)))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        b = int(attrs["blocksize"])
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // b, b, w // b, b)
        y = y.permute(0, 3, 5, 1, 2, 4) if attrs["mode"] == "DCR" else y.permute(0, 1, 3, 5, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)
