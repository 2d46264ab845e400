"""Adam (ai.onnx.preview.training opset 1).

Inputs R (learning rate), T (update count), then n tensors X, n gradients G, n first
momentums V and n second momentums H; outputs the n updated X, V, then H.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from .registry import InferContext, Op, register


@register
class Adam(Op):
    name = "Adam"
    domain = "ai.onnx.preview.training"
    attrs = {"alpha": 0.9, "beta": 0.999, "epsilon": 1e-6, "norm_coefficient": 0.0, "norm_coefficient_post": 0.0}

    def check(self, node: Node) -> Optional[str]:
        if (len(node.inputs) - 2) % 4 or len(node.outputs) * 4 != (len(node.inputs) - 2) * 3:
            return f"{len(node.inputs)} inputs and {len(node.outputs)} outputs do not form groups (X, G, V, H)"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        n = (ctx.num_inputs - 2) // 4
        return [ctx.type(2 + k * n + i) for k in (0, 2, 3) for i in range(n)]

    def reference(self, ctx, inputs, attrs):
        r, t = inputs[0], inputs[1]
        n = (len(inputs) - 2) // 4
        alpha, beta = attrs["alpha"], attrs["beta"]
        # Bias correction of both momentums, from the second update on (T > 0).
        t_wide = t.to(torch.float64)
        corrected = r * torch.sqrt(1 - beta ** t_wide) / (1 - alpha ** t_wide)
        rate = torch.where(t > 0, corrected.to(r.dtype), r)
        new_x, new_v, new_h = [], [], []
        xs, gs, vs, hs = (inputs[2 + k * n:2 + (k + 1) * n] for k in range(4))
        for x, g, v, h in zip(xs, gs, vs, hs):
            g_reg = attrs["norm_coefficient"] * x + g
            v_next = alpha * v + (1 - alpha) * g_reg
            h_next = beta * h + (1 - beta) * (g_reg * g_reg)
            x_next = x - rate * (v_next / (torch.sqrt(h_next) + attrs["epsilon"]))
            new_x.append(((1 - attrs["norm_coefficient_post"]) * x_next).to(x.dtype))
            new_v.append(v_next.to(v.dtype))
            new_h.append(h_next.to(h.dtype))
        return new_x + new_v + new_h
