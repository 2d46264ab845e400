"""FlexAttention (ai.onnx.preview): attention whose scores and probabilities pass through
user subgraphs, like PyTorch's flex_attention.

scores = score_mod((Q·√scale) @ (K·√scale)ᵀ); probs = prob_mod(softmax(scores)); Y = probs @ V.
Scores and probabilities are in `softmax_precision` (float32 for 16-bit inputs by default).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..ir import DType, Graph, Node, TensorType
from .registry import InferContext, Op, register

_PRECISIONS = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)


def _softmax_dtype(input_dtype: DType, softmax_precision: int) -> DType:
    if softmax_precision:
        return DType(softmax_precision)
    return DType.FLOAT64 if input_dtype == DType.FLOAT64 else DType.FLOAT32


@register
class FlexAttention(Op):
    name = "FlexAttention"
    domain = "ai.onnx.preview"
    attrs = {"scale": None, "score_mod": None, "prob_mod": None, "softmax_precision": 0}

    def check(self, node: Node) -> Optional[str]:
        if node.attrs["softmax_precision"] and DType(node.attrs["softmax_precision"]) not in _PRECISIONS:
            return f"softmax_precision {DType(node.attrs['softmax_precision']).short} is not a float type"
        for key in ("score_mod", "prob_mod"):
            g = node.attrs[key]
            if isinstance(g, Graph) and (len(g.inputs) != 1 or len(g.outputs) != 1):
                return f"{key} must take one input and give one output"
        for i in range(3):
            t = node.inputs[i].type
            if t is not None and t.shape is not None and len(t.shape) != 4:
                return f"input {i} must be rank 4, got rank {len(t.shape)}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        q, k, v = ctx.type(0), ctx.shape(1), ctx.shape(2)
        if q is None or q.shape is None or k is None or v is None:
            return [None]
        scores = TensorType(_softmax_dtype(q.dtype, ctx.attrs["softmax_precision"]),
                            (q.shape[0], q.shape[1], q.shape[2], k[2]))
        if ctx.infer_subgraph is not None:
            for key in ("score_mod", "prob_mod"):
                if isinstance(ctx.attrs[key], Graph):
                    ctx.infer_subgraph(ctx.attrs[key], [scores])
        return [TensorType(ctx.dtype(2) or q.dtype, (q.shape[0], q.shape[1], q.shape[2], v[3]))]

    def reference(self, ctx, inputs, attrs):
        q, k, v = inputs[0], inputs[1], inputs[2]
        q_heads, kv_heads = q.shape[1], k.shape[1]
        if q_heads != kv_heads:
            if q_heads % kv_heads:
                raise ValueError(f"q heads ({q_heads}) must be a multiple of kv heads ({kv_heads})")
            k = k.repeat_interleave(q_heads // kv_heads, dim=1)
            v = v.repeat_interleave(q_heads // kv_heads, dim=1)
        scale = attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(q.shape[3])
        # √scale is taken in float32 and rounded to the input type, as ONNX's definition does; a
        # Python number, so no host-to-device copy breaks a CUDA-graph capture.
        root = float(torch.tensor(scale, dtype=torch.float32).sqrt().to(q.dtype))
        compute = _softmax_dtype(DType.from_torch(q.dtype), attrs["softmax_precision"]).torch
        scores = torch.matmul(q * root, (k * root).transpose(-1, -2)).to(compute)
        if attrs["score_mod"] is not None:
            scores = ctx.run_subgraph(attrs["score_mod"], [scores])[0].to(compute)
        probs = torch.softmax(scores, dim=-1)
        if attrs["prob_mod"] is not None:
            probs = ctx.run_subgraph(attrs["prob_mod"], [probs])[0].to(compute)
        return torch.matmul(probs, v.to(compute)).to(v.dtype)
