"""Transpose: permute dims by `perm` (default: reverse them)."""

from __future__ import annotations

from typing import Optional

from ..ir import TensorType
from .registry import InferContext, Op, register


@register
class Transpose(Op):
    name = "Transpose"
    attrs = {"perm": None}

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if t.shape is None:
            perm = ctx.attrs.get("perm")
            return [TensorType(t.dtype, None if perm is None else (None,) * len(perm))]
        perm = ctx.attrs.get("perm")
        if perm is None:
            perm = list(range(len(t.shape)))[::-1]
        if sorted(perm) != list(range(len(t.shape))):
            raise ValueError(f"perm {list(perm)} is not a permutation of {len(t.shape)} dims")
        return [TensorType(t.dtype, tuple(t.shape[p] for p in perm))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        perm = attrs.get("perm")
        if perm is None:
            perm = list(range(x.dim()))[::-1]
        return x.permute(*perm)
