"""Momentum (ai.onnx.preview.training opset 1): SGD with momentum, standard or Nesterov.

Inputs R (learning rate), T (update count), then n tensors X, n gradients G and n
momentums V; outputs the n updated X followed by the n updated V.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from .registry import REQUIRED, InferContext, Op, register


@register
class Momentum(Op):
    name = "Momentum"
    domain = "ai.onnx.preview.training"
    attrs = {"alpha": REQUIRED, "beta": REQUIRED, "mode": REQUIRED, "norm_coefficient": REQUIRED}

    def check(self, node: Node) -> Optional[str]:
        if node.attrs["mode"] not in ("standard", "nesterov"):
            return f"mode '{node.attrs['mode']}' is not 'standard' or 'nesterov'"
        if (len(node.inputs) - 2) % 3 or len(node.outputs) * 3 != (len(node.inputs) - 2) * 2:
            return f"{len(node.inputs)} inputs and {len(node.outputs)} outputs do not form groups (X, G, V)"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        n = (ctx.num_inputs - 2) // 3
        return [ctx.type(2 + i) for i in range(n)] + [ctx.type(2 + 2 * n + i) for i in range(n)]

    def reference(self, ctx, inputs, attrs):
        r, t = inputs[0], inputs[1]
        n = (len(inputs) - 2) // 3
        alpha, norm = attrs["alpha"], attrs["norm_coefficient"]
        # The gradient enters with weight 1 on the first update (T == 0).
        beta = torch.where(t > 0, attrs["beta"], 1.0)
        new_x, new_v = [], []
        for x, g, v in zip(inputs[2:2 + n], inputs[2 + n:2 + 2 * n], inputs[2 + 2 * n:]):
            g_reg = norm * x + g
            v_next = alpha * v + beta * g_reg
            step = v_next if attrs["mode"] == "standard" else g_reg + alpha * v_next
            new_x.append((x - r * step).to(x.dtype))
            new_v.append(v_next.to(v.dtype))
        return new_x + new_v
