"""Upsample (deprecated since opset 10): Resize with asymmetric coordinates; scales as an attribute
(opset 7-8) or an input (opset 9)."""

from __future__ import annotations

from typing import Optional

from ..ir import Node, TensorType
from .registry import InferContext, Op, register
from .resize import output_plan, resize_tensor


@register
class Upsample(Op):
    host_inputs = (1,)
    name = "Upsample"
    since_opset = 7
    attrs = {"mode": "nearest", "scales": None}

    def normalize(self, attrs, opset):
        out = super().normalize(attrs, opset)
        out["coordinate_transformation_mode"] = "asymmetric"
        out["nearest_mode"] = "simple"
        return out

    def check(self, node: Node) -> Optional[str]:
        if node.attrs.get("mode") not in ("nearest", "linear"):
            return f"mode '{node.attrs.get('mode')}' is not nearest or linear"
        if node.opset < 9 and not node.attrs.get("scales"):
            return "scales attribute is required before opset 9"
        return None

    def _scales(self, ctx: InferContext) -> Optional[list[float]]:
        if ctx.attrs.get("scales"):
            return [float(s) for s in ctx.attrs["scales"]]
        c = ctx.const(1)
        return None if c is None else [float(v) for v in c.reshape(-1)]

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if t.shape is None:
            return [TensorType(t.dtype, None)]
        scales = self._scales(ctx)
        if scales is None:
            return [TensorType(t.dtype, (None,) * len(t.shape))]
        return [TensorType(t.dtype, tuple(int(d * s) if isinstance(d, int) else None
                                          for d, s in zip(t.shape, scales)))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        scales = attrs["scales"] if attrs.get("scales") else inputs[1].reshape(-1).tolist()
        out, factor = output_plan(list(x.shape), attrs, [float(s) for s in scales], None)
        return resize_tensor(x, out, factor, attrs)
