"""RotaryEmbedding (RoPE): rotate pairs of each head's features by position-dependent angles."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Node, TensorType
from .registry import InferContext, Op, register


@register
class RotaryEmbedding(Op):
    name = "RotaryEmbedding"
    since_opset = 23
    attrs = {"interleaved": 0, "num_heads": 0, "rotary_embedding_dim": 0}

    def check(self, node: Node) -> Optional[str]:
        x = node.inputs[0].type
        if x is not None and x.shape is not None:
            if len(x.shape) not in (3, 4):
                return f"input must be 3-D or 4-D, got rank {len(x.shape)}"
            if len(x.shape) == 3 and node.attrs["num_heads"] <= 0:
                return "3-D input needs the num_heads attribute"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [ctx.type(0)]

    def reference(self, ctx, inputs, attrs):
        x, cos, sin = inputs[0], inputs[1], inputs[2]
        position_ids = inputs[3] if len(inputs) > 3 else None
        if x.dim() == 4:
            heads_first = x.transpose(1, 2)  # (batch, seq, heads, head_size)
        else:
            batch, seq, hidden = x.shape
            heads = attrs["num_heads"]
            heads_first = x.reshape(batch, seq, heads, hidden // heads)
        head_size = heads_first.shape[3]
        dim = attrs["rotary_embedding_dim"] or head_size
        half = dim // 2
        if position_ids is not None:
            cos, sin = cos[position_ids.to(torch.int64)], sin[position_ids.to(torch.int64)]
        if cos.shape[-1] != half or sin.shape[-1] != half:
            raise ValueError(f"cos/sin caches' last dimension ({cos.shape[-1]}, {sin.shape[-1]}) must be "
                             f"rotary_embedding_dim/2 = {half}")
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # (batch, seq, 1, half)
        rotate, keep = heads_first[..., :dim], heads_first[..., dim:]
        if attrs["interleaved"]:
            x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
        else:
            x1, x2 = rotate[..., :half], rotate[..., half:]
        real = cos * x1 - sin * x2
        imag = sin * x1 + cos * x2
        if attrs["interleaved"]:
            rotated = torch.stack([real, imag], dim=-1).reshape(rotate.shape)
        else:
            rotated = torch.cat([real, imag], dim=-1)
        out = torch.cat([rotated, keep], dim=-1).to(x.dtype)
        if x.dim() == 4:
            return out.transpose(1, 2).contiguous()
        return out.reshape(x.shape)
