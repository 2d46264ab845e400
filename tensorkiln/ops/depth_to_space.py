"""DepthToSpace: move channel blocks into spatial blocks (DCR or CRD order)."""

from __future__ import annotations

from typing import Optional

from ..ir import Node, TensorType
from .registry import InferContext, Op, register


@register
class DepthToSpace(Op):
    name = "DepthToSpace"
    attrs = {"blocksize": None, "mode": "DCR"}

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
        mul = lambda d, k: d * k if isinstance(d, int) else None  # noqa: E731
        return [TensorType(t.dtype, (n, c // (b * b) if isinstance(c, int) else None, mul(h, b), mul(w, b)))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        b = int(attrs["blocksize"])
        n, c, h, w = x.shape
        if attrs["mode"] == "DCR":
            y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c // (b * b), h * b, w * b)
