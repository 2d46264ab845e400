"""CausalConvWithState: causal depthwise 1-D convolution carrying the last k-1 inputs as state.

output[b, c, t] = act(bias[c] + sum_i weight[c, 0, i] * padded[b, c, t + i]), where `padded`
is past_state (zeros if absent) followed by the input; present_state is padded's last k-1
positions. Used by Mamba and Gated DeltaNet layers for incremental decoding.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from .registry import InferContext, Op, register

_ACTIVATIONS = ("none", "silu", "swish")


@register
class CausalConvWithState(Op):
    name = "CausalConvWithState"
    attrs = {"activation": "none"}

    def check(self, node: Node) -> Optional[str]:
        if node.attrs["activation"] not in _ACTIVATIONS:
            return f"activation '{node.attrs['activation']}' is not one of {', '.join(_ACTIVATIONS)}"
        for i, what in ((0, "input"), (1, "weight")):
            t = node.inputs[i].type
            if t is not None and t.shape is not None and len(t.shape) != 3:
                return f"{what} must be rank 3, got rank {len(t.shape)}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        x, w = ctx.type(0), ctx.shape(1)
        if x is None:
            return [None, None]
        state = None
        if x.shape is not None and w is not None:
            k = w[2]
            state = TensorType(x.dtype, (x.shape[0], x.shape[1], k - 1 if isinstance(k, int) else None))
        return [x, state]

    def reference(self, ctx, inputs, attrs):
        x, weight = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        past = inputs[3] if len(inputs) > 3 else None
        batch, channels, _ = x.shape
        k = weight.shape[2]
        if past is None:
            past = torch.zeros((batch, channels, k - 1), dtype=x.dtype, device=x.device)
        padded = torch.cat([past.to(x.dtype), x], dim=2)
        compute = torch.promote_types(x.dtype, torch.float32)
        out = torch.nn.functional.conv1d(padded.to(compute), weight.to(compute),
                                         None if bias is None else bias.to(compute), groups=channels)
        out = out.to(x.dtype)
        if attrs["activation"] in ("silu", "swish"):
            out = torch.nn.functional.silu(out.to(compute)).to(x.dtype)
        present = padded[:, :, padded.shape[2] - (k - 1):]
        return out, present
