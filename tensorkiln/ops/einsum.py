"""Einsum: Einstein summation over any number of operands (explicit `->` or implicit
output, `...` for broadcast dims). Integer einsums run on the CPU, where torch has them."""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import Dim, DType, Shape, TensorType, broadcast_shapes
from .registry import InferContext, Op, register

_ELLIPSIS = "."


def _split_term(term: str) -> list[str]:
    """Labels of one term, '...' as a single '.' label."""
    term = term.replace("...", _ELLIPSIS)
    return [c for c in term if not c.isspace()]


def parse_equation(equation: str, num_inputs: int) -> tuple[list[list[str]], list[str]]:
    """(labels per input, output labels) with '.' standing for the ellipsis."""
    lhs, arrow, rhs = equation.partition("->")
    terms = [_split_term(t) for t in lhs.split(",")]
    if len(terms) != num_inputs:
        raise ValueError(f"Einsum equation '{equation}' has {len(terms)} terms for {num_inputs} inputs")
    if arrow:
        out = _split_term(rhs)
    else:
        counts: dict[str, int] = {}
        for t in terms:
            for c in t:
                if c != _ELLIPSIS:
                    counts[c] = counts.get(c, 0) + 1
        has_ellipsis = any(_ELLIPSIS in t for t in terms)
        out = ([_ELLIPSIS] if has_ellipsis else []) + sorted(c for c, n in counts.items() if n == 1)
    return terms, out


def einsum_shape(equation: str, shapes: list[Shape]) -> Shape:
    if any(s is None for s in shapes):
        return None
    terms, out = parse_equation(equation, len(shapes))
    sizes: dict[str, Dim] = {}
    ellipsis_shapes: list[Shape] = []
    for labels, shape in zip(terms, shapes):
        n_ellipsis = len(shape) - (len(labels) - (1 if _ELLIPSIS in labels else 0))
        i = 0
        for c in labels:
            if c == _ELLIPSIS:
                ellipsis_shapes.append(tuple(shape[i:i + n_ellipsis]))
                i += n_ellipsis
                continue
            d = shape[i]
            i += 1
            prev = sizes.get(c)
            # A label of size 1 broadcasts against the other operands' size for it.
            if prev is None or prev == 1 or (not isinstance(prev, int) and isinstance(d, int) and d != 1):
                sizes[c] = d
    dims: list[Dim] = []
    for c in out:
        if c == _ELLIPSIS:
            dims.extend(broadcast_shapes(*ellipsis_shapes) if ellipsis_shapes else ())
        else:
            dims.append(sizes.get(c))
    return tuple(dims)


@register
class Einsum(Op):
    name = "Einsum"
    attrs = {"equation": ""}

    def check(self, node) -> Optional[str]:
        if not node.attrs.get("equation"):
            return "Einsum needs an equation"
        dt = node.inputs[0].dtype if node.inputs and node.inputs[0] is not None else None
        if dt is not None and not (dt.has_torch and (dt.is_integer or dt in (DType.FLOAT32, DType.FLOAT16,
                                                                               DType.BFLOAT16, DType.FLOAT64))):
            return f"Einsum of {dt.short} tensors is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        shapes = [ctx.shape(i) for i in range(ctx.num_inputs)]
        return [TensorType(t.dtype, einsum_shape(ctx.attrs["equation"], shapes))]

    def reference(self, ctx, inputs, attrs):
        equation = attrs["equation"].replace(" ", "")
        dtype = inputs[0].dtype
        if inputs[0].is_floating_point():
            return torch.einsum(equation, *inputs)
        device = inputs[0].device
        # int64 arithmetic wraps like every narrower ONNX integer type once cast back.
        cpu = [x.cpu().view(torch.int64) if x.dtype == torch.uint64 else x.cpu().to(torch.int64) for x in inputs]
        out = torch.einsum(equation, *cpu)
        if dtype == torch.uint64:
            return out.view(torch.uint64).to(device)
        return out.to(dtype).to(device)
