"""tensorkiln::ScaledDotProductAttention: softmax(Q @ Kᵀ · scale + mask) @ V in one layer.

What `recognize_attention` turns the primitive chain
MatMul(Q, Kᵀ) → Div/Mul(scale) → Add(mask)? → Softmax(last axis) → MatMul(V) into.

Inputs: Q[..., S, D], K[..., L, D] (not transposed), V[..., L, Dv], optional float
`attn_mask` added to the scores (numpy broadcasting, as the Add it replaces).
Attribute `scale`: the factor the scores are multiplied by (no default: the chain it
replaces always says what it is, 1.0 when it has no scaling). Output: [..., S, Dv].

Why not ONNX `Attention`: that op wants exactly 4-D inputs, pads a mask whose last dim
is shorter than the keys with -inf instead of broadcasting it, and scales Q and K
separately; the chains exporters write come in 3-D and 4-D with masks of any
broadcastable shape. This op keeps the chain's semantics and runs as
torch.nn.functional.scaled_dot_product_attention (fused kernels on CPU and CUDA).
One deliberate difference: a query row whose mask is -inf for every key gives zeros
here (as torch and ONNX Attention do), where the primitive chain gives NaN.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..ir import DType, Node, TensorType, broadcast_shapes
from .registry import REQUIRED, InferContext, Op, register

_FLOATS = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)


def aligned_rows(t: torch.Tensor) -> torch.Tensor:
    """`t` with dense rows at 16-byte aligned strides, as torch's fused CUDA attention kernels read
    them: torch 2.11 checks the head dim's alignment but not the strides of a view, and a view whose
    rows are 56 bytes apart (head dim 24 sliced from 28) came out wrong in every element."""
    size = t.element_size()
    if t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and all(
            s * size % 16 == 0 for s, n in zip(t.stride()[:-1], t.shape[:-1]) if n > 1):
        return t
    return t.contiguous()


def _attention_by_parts(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                        scale: float) -> torch.Tensor:
    """The primitive chain itself, for shapes the fused kernel does not take (batch dims
    that broadcast between Q, K and V, or a mask that widens the scores)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores + mask
    accumulate = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype
    probs = torch.softmax(scores, dim=-1, dtype=accumulate).to(v.dtype)
    return torch.matmul(probs, v)


@register
class ScaledDotProductAttention(Op):
    name = "ScaledDotProductAttention"
    accumulates_in_fp32 = True  # half-precision inputs are computed in float32 (tests/test_precision.py)
    domain = "tensorkiln"
    attrs = {"scale": REQUIRED}

    def check(self, node: Node) -> Optional[str]:
        if len(node.inputs) not in (3, 4) or any(v is None for v in node.inputs[:3]):
            return "takes Q, K, V and an optional attn_mask"
        dtypes = {v.dtype for v in node.inputs if v is not None and v.dtype is not None}
        if dtypes - set(_FLOATS):
            return f"attention of {', '.join(sorted(d.short for d in dtypes))} tensors is not supported"
        if len(dtypes) > 1:
            return f"Q, K, V and attn_mask must share one dtype, got {', '.join(sorted(d.short for d in dtypes))}"
        ranks = [len(v.shape) for v in node.inputs[:3] if v.shape is not None]
        if any(r < 2 for r in ranks):
            return "Q, K and V must have rank 2 or more"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        q, k, v = ctx.type(0), ctx.type(1), ctx.type(2)
        if q is None:
            return [None]
        if q.shape is None or k is None or k.shape is None or v is None or v.shape is None:
            return [TensorType(q.dtype, None)]
        batch = broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        scores = tuple(batch) + (q.shape[-2], k.shape[-2])
        if ctx.has_input(3):
            mask = ctx.shape(3)
            if mask is None:
                return [TensorType(q.dtype, None)]
            # The mask is added with numpy broadcasting: it may widen the scores.
            scores = broadcast_shapes(scores, mask)
        shape = tuple(scores[:-1]) + (v.shape[-1],)
        return [TensorType(q.dtype, shape)]

    def reference(self, ctx, inputs, attrs):
        q, k, v = inputs[0], inputs[1], inputs[2]
        mask = inputs[3] if len(inputs) > 3 else None
        scale = float(attrs["scale"])
        batch = q.shape[:-2]
        fused = k.shape[:-2] == batch and v.shape[:-2] == batch
        if fused and mask is not None:
            scores = tuple(batch) + (q.shape[-2], k.shape[-2])
            fused = mask.dim() <= len(scores) and tuple(torch.broadcast_shapes(mask.shape, scores)) == scores
        if not fused:
            return _attention_by_parts(q, k, v, mask, scale)
        if mask is not None and mask.dim() < 2:
            # torch's kernel wants a mask of at least 2 dims; a scalar or vector mask broadcasts the same.
            mask = mask.reshape((1,) * (2 - mask.dim()) + tuple(mask.shape))
        if q.is_cuda:
            q, k, v = aligned_rows(q), aligned_rows(k), aligned_rows(v)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
