"""ArrayFeatureExtractor (ai.onnx.ml opset 1): pick entries of the last axis by index.

Output [..., k] for k indices (all of Y, flattened); a 1-D input gives [1, k], as
onnxruntime does.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import TensorType
from .registry import InferContext, Op, register


@register
class ArrayFeatureExtractor(Op):
    name = "ArrayFeatureExtractor"
    domain = "ai.onnx.ml"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        x, idx = ctx.type(0), ctx.shape(1)
        if x is None:
            return [None]
        k = None
        if idx is not None and all(isinstance(d, int) for d in idx):
            k = 1
            for d in idx:
                k *= d
        if x.shape is None:
            return [TensorType(x.dtype, None)]
        lead = (1,) if len(x.shape) == 1 else tuple(x.shape[:-1])
        return [TensorType(x.dtype, lead + (k,))]

    def reference(self, ctx, inputs, attrs):
        x, indices = inputs
        index = indices.reshape(-1).long()
        size = x.shape[-1]
        if bool(((index < 0) | (index >= size)).any()):
            raise IndexError(f"ArrayFeatureExtractor: indices {index.tolist()} out of range for last dim {size}")
        out = torch.index_select(x, x.dim() - 1, index)
        return out.reshape(1, -1) if x.dim() == 1 else out
