"""Reshape: 0 copies the input dim (unless allowzero), -1 takes what is left.

Opset 1-4 gave the target shape as the `shape` attribute; 5+ as the second input.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from ..ir import TensorType
from ..ir.shape import Dim, Shape
from ._shape_common import dims_product
from .registry import InferContext, Op, as_tuple, register


def resolve_target(in_shape: Sequence[int], target: Sequence[int], allowzero: int) -> list[int]:
    """The concrete output shape of a Reshape given the input's concrete shape."""
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise ValueError(f"reshape target {list(target)} copies dim {i} of a rank-{len(in_shape)} input")
            out.append(int(in_shape[i]))
        else:
            out.append(int(d))
    if out.count(-1) > 1:
        raise ValueError(f"reshape target {list(target)} has more than one -1")
    return out


def infer_reshape(in_shape: Shape, target: Sequence[int], allowzero: int) -> Shape:
    """Symbolic Reshape: copied dims keep their symbol; -1 is solved by cancelling the
    symbols the other dims account for."""
    dims: list[Dim] = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            dims.append(None if in_shape is None or i >= len(in_shape) else in_shape[i])
        else:
            dims.append(int(d))
    if -1 not in dims:
        return tuple(dims)
    at = dims.index(-1)
    if in_shape is None:
        dims[at] = None
        return tuple(dims)
    dims[at] = _solve_minus_one(list(in_shape), [d for j, d in enumerate(dims) if j != at])
    return tuple(dims)


def _solve_minus_one(in_dims: list[Dim], other: list[Dim]) -> Dim:
    if any(d is None for d in other) or any(d is None for d in in_dims):
        return None
    in_syms = [d for d in in_dims if isinstance(d, str)]
    for d in other:
        if isinstance(d, str):
            if d not in in_syms:
                return None
            in_syms.remove(d)
    in_const = 1
    for d in in_dims:
        if isinstance(d, int):
            in_const *= d
    other_const = 1
    for d in other:
        if isinstance(d, int):
            other_const *= d
    if in_const == 0:
        return 0
    if other_const == 0 or in_const % other_const:
        return None
    rest = in_const // other_const
    if not in_syms:
        return rest
    return dims_product([*in_syms, rest])


@register
class Reshape(Op):
    host_inputs = (1,)
    name = "Reshape"
    attrs = {"allowzero": 0, "shape": None}

    def check(self, node):
        if node.opset < 5 and node.attrs.get("shape") is None:
            return "Reshape before opset 5 needs the 'shape' attribute"
        return None

    def _target(self, ctx: InferContext) -> Optional[list[int]]:
        if ctx.attrs.get("shape") is not None:
            return list(ctx.attrs["shape"])
        return ctx.const_ints(1)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        target = self._target(ctx)
        if target is None:
            s = ctx.shape(1)
            rank = s[0] if s is not None and len(s) == 1 and isinstance(s[0], int) else None
            return [TensorType(t.dtype, None if rank is None else (None,) * rank)]
        return [TensorType(t.dtype, infer_reshape(t.shape, target, ctx.attrs.get("allowzero", 0)))]

    def reference(self, ctx, inputs, attrs: dict[str, Any]):
        x = inputs[0]
        target = list(attrs["shape"]) if attrs.get("shape") is not None else as_tuple(inputs[1])
        return x.reshape(resolve_target(x.shape, target, attrs.get("allowzero", 0)))
