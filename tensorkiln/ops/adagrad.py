"""Adagrad (ai.onnx.preview.training opset 1).

Inputs R (learning rate), T (update count), then n tensors X, n gradients G and n
accumulated squared gradients H; outputs the n updated X followed by the n updated H.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from .registry import InferContext, Op, register


@register
class Adagrad(Op):
    name = "Adagrad"
    domain = "ai.onnx.preview.training"
    attrs = {"decay_factor": 0.0, "epsilon": 0.0, "norm_coefficient": 0.0}

    def check(self, node: Node) -> Optional[str]:
        if (len(node.inputs) - 2) % 3 or len(node.outputs) * 3 != (len(node.inputs) - 2) * 2:
            return f"{len(node.inputs)} inputs and {len(node.outputs)} outputs do not form groups (X, G, H)"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        n = (ctx.num_inputs - 2) // 3
        return [ctx.type(2 + i) for i in range(n)] + [ctx.type(2 + 2 * n + i) for i in range(n)]

    def reference(self, ctx, inputs, attrs):
        r, t = inputs[0], inputs[1]
        n = (len(inputs) - 2) // 3
        rate = r / (1 + t * attrs["decay_factor"])
        new_x, new_h = [], []
        for x, g, h in zip(inputs[2:2 + n], inputs[2 + n:2 + 2 * n], inputs[2 + 2 * n:]):
            g_reg = attrs["norm_coefficient"] * x + g
            h_next = h + g_reg * g_reg
            new_x.append((x - rate * g_reg / (torch.sqrt(h_next) + attrs["epsilon"])).to(x.dtype))
            new_h.append(h_next.to(h.dtype))
        return new_x + new_h
