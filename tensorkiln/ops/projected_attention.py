"""tensorkiln::ProjectedAttention: a transformer layer's merged Q/K/V projection and its attention in one layer.

    qkv = x @ Wᵀ + bias                                  x [B, S, E], W [3·H·D, E], bias [3·H·D]
    q, k, v = qkv viewed [B, S, H, 3, D], split along the 3, each transposed to [B, H, S, D]
    y = softmax(q kᵀ · scale + mask) v                    [B, H, S, D]

What `fuse_projected_attention` (passes/projected_attention.py) makes of FusedMatMul → Split →
Reshape → Transpose (three times) → ScaledDotProductAttention, where the device has a kernel that
computes both at once (tactics/cuda/projected_attention.py): the projection then never goes
through memory. The projection is rounded to the layer's dtype before the attention reads it, as
the FusedMatMul's output was.

Inputs: x; W with one row per output column, grouped by head: head h's query rows, then its key
rows, then its value rows (`pack_heads` makes it from a FusedMatMul's [E, 3·H·D] weight, whose
columns are the Q, K and V thirds with heads in blocks of D), the kernel's K-major operand as it
stands, so the engine keeps one copy; an optional bias in the same order; an optional float mask
added to the scores (broadcast to [B, H, S, S]). Attributes: `heads` (H), `scale`. Output:
[B, H, S, D], the attention layer's output.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..ir import DType, Node, TensorType
from .registry import REQUIRED, InferContext, Op, register
from .sdpa import ScaledDotProductAttention

_FLOATS = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)
_ATTENTION = ScaledDotProductAttention()


def pack_heads(weight: np.ndarray, bias: Optional[np.ndarray], heads: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """A Q/K/V product's [E, 3·H·D] weight (and [3·H·D] bias) in this op's order: [3·H·D, E] rows
    grouped by head, each head's query, key and value rows in turn."""
    embed, columns = weight.shape
    d = columns // (3 * heads)
    packed = np.ascontiguousarray(weight.T.reshape(3, heads, d, embed).transpose(1, 0, 2, 3).reshape(columns, embed))
    if bias is None:
        return packed, None
    return packed, np.ascontiguousarray(bias.reshape(3, heads, d).transpose(1, 0, 2).reshape(columns))


def head_dim(columns: int, heads: int) -> Optional[int]:
    """D for W's column count, or None when the columns do not split into 3 x heads blocks."""
    if heads < 1 or columns % (3 * heads):
        return None
    return columns // (3 * heads)


@register
class ProjectedAttention(Op):
    name = "ProjectedAttention"
    accumulates_in_fp32 = True  # the projection's products and the softmax, as their unfused layers
    domain = "tensorkiln"
    attrs = {"heads": REQUIRED, "scale": REQUIRED}

    def check(self, node: Node) -> Optional[str]:
        if len(node.inputs) not in (2, 3, 4) or node.inputs[0] is None or node.inputs[1] is None:
            return "takes x, W, an optional bias and an optional mask"
        dtypes = {v.dtype for v in node.inputs if v is not None and v.dtype is not None}
        if dtypes - set(_FLOATS):
            return f"projected attention of {', '.join(sorted(d.short for d in dtypes))} tensors is not supported"
        if len(dtypes) > 1:
            return f"x, W, bias and mask must share one dtype, got {', '.join(sorted(d.short for d in dtypes))}"
        x, w = node.inputs[0], node.inputs[1]
        if x.shape is not None and len(x.shape) != 3:
            return f"x must be [batch, sequence, embedding], got rank {len(x.shape)}"
        if w.shape is not None and len(w.shape) != 2:
            return f"W must be 2-D, got rank {len(w.shape)}"
        heads = int(node.attrs.get("heads", 0))
        if w.shape is not None and isinstance(w.shape[0], int) and head_dim(w.shape[0], heads) is None:
            return f"W's {w.shape[0]} rows do not split into Q, K and V of {heads} heads"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        x, w = ctx.type(0), ctx.type(1)
        if x is None:
            return [None]
        if x.shape is None or w is None or w.shape is None or not isinstance(w.shape[0], int):
            return [TensorType(x.dtype, None)]
        heads = int(ctx.attrs["heads"])
        d = head_dim(w.shape[0], heads)
        return [TensorType(x.dtype, (x.shape[0], heads, x.shape[1], d))]

    def reference(self, ctx, inputs, attrs):
        x, w = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        mask = inputs[3] if len(inputs) > 3 else None
        batch, seq, embed = x.shape
        heads = int(attrs["heads"])
        d = head_dim(w.shape[0], heads)
        rows = x.reshape(batch * seq, embed)
        qkv = torch.mm(rows, w.t()) if bias is None else torch.addmm(bias, rows, w.t())
        qkv = qkv.view(batch, seq, heads, 3, d)
        q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))
        return _ATTENTION.reference(ctx, [q, k, v, mask], {"scale": attrs["scale"]})
