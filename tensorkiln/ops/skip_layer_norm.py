"""SkipLayerNormalization (domain "tensorkiln"): a residual Add and the LayerNormalization after it, one layer.

    sum = x + skip                                       (numpy broadcasting, as the Add it replaces)
    y   = LayerNormalization(sum, gamma, beta; axis, epsilon, stash_type)

Inputs (x, skip, gamma, beta?); attributes epsilon, axis (the normalized dims are axis..last)
and stash_type keep their LayerNormalization meaning. Outputs: y, and optionally the sum itself
(a pre-LN transformer reads it as the next residual). As com.microsoft.SkipLayerNormalization,
except that the sum is the second output, not the fourth, and any axis is taken.

The sum is computed in the statistics dtype (float32 for float16/bfloat16 inputs) and feeds the
statistics unrounded; y and the sum output are each rounded once to the input dtype.

`sum_output` says whether the second output is wanted (tactics see attributes, not the node):
None means "as many outputs as the node lists", which `check` records, as Split records its
output count; the fusion rule sets it. A tactic that does not know computes the sum.

Shapes: x and skip broadcast as numpy's Add does. The fusion rule only creates the row-broadcast
form that fused kernels take (`row_broadcast_reason`): x has the sum's shape and skip is x's
trailing dims, with leading 1s, covering whole normalized rows ([S, D] or [1, S, D] over
[B, S, D]), so skip's row r is row r mod (skip rows) of x.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from ..ir import Node, TensorType, broadcast_shapes
from .fused_conv import DOMAIN
from .layer_normalization import check_float_input, stash_dtype
from .registry import InferContext, Op, get_op, normalize_axis, register

# The largest normalized row (product of the normalized dims) the fusion creates the layer for: one
# row is reduced in registers by one block of the fused kernels. Larger layer norms keep the Add and
# torch's LayerNorm kernel, which loops over a row.
MAX_NORMALIZED_SIZE = 8192


def row_broadcast_reason(x_shape: Optional[Sequence], skip_shape: Optional[Sequence], axis: int) -> Optional[str]:
    """Why (x, skip) is not in the row-broadcast form fused kernels take, or None when it is.

    The form: skip's dims after its leading 1s equal x's trailing dims (symbolic dims by name) and
    span at least the normalized dims axis..last of x. Unknown dims (None) cannot be shown equal."""
    if x_shape is None or skip_shape is None:
        return "the shapes of x and skip are not known"
    x_shape, skip_shape = tuple(x_shape), tuple(skip_shape)
    if len(skip_shape) > len(x_shape):
        return f"skip {list(skip_shape)} has a higher rank than x {list(x_shape)}"
    lead = 0
    while lead < len(skip_shape) and skip_shape[lead] == 1:
        lead += 1
    kept = skip_shape[lead:]
    tail = x_shape[len(x_shape) - len(kept):] if kept else ()
    if any(d is None for d in kept) or any(d is None for d in tail) or tuple(kept) != tuple(tail):
        return (f"skip {list(skip_shape)} is not x's trailing dims {list(x_shape)} with leading 1s "
                f"(it broadcasts inside a row)")
    covered = len(x_shape) - len(kept)
    if covered > axis and any(d != 1 for d in x_shape[axis:covered]):
        return (f"skip {list(skip_shape)} repeats along normalized dims of x {list(x_shape)} (axis {axis}): "
                f"it must hold whole rows")
    return None


def normalized_size(shape: Sequence, axis: int) -> Optional[int]:
    """The number of elements of one normalized row, or None if a normalized dim is not static."""
    dims = tuple(shape[axis:])
    if not all(isinstance(d, int) for d in dims):
        return None
    return math.prod(dims)


def sum_output_reason(node: Node) -> Optional[str]:
    """Records `sum_output` from the node's output count when unset; says why it disagrees otherwise."""
    wanted = node.attrs.get("sum_output")
    if wanted is None:
        node.attrs["sum_output"] = int(len(node.outputs) > 1)
    elif bool(wanted) != (len(node.outputs) > 1):
        return f"sum_output={wanted} but the node lists {len(node.outputs)} output(s)"
    return None


def skip_layer_norm(x: torch.Tensor, skip: torch.Tensor, gamma: torch.Tensor, beta: Optional[torch.Tensor],
                    attrs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, sum) in x's dtype: the sum in the statistics dtype (or x's, if wider), normalized unrounded."""
    compute = stash_dtype(attrs["stash_type"]).torch
    wide = compute if compute.itemsize >= x.dtype.itemsize else x.dtype
    total = x.to(wide) + skip.to(wide)
    layer_norm = get_op("LayerNormalization")
    inputs = [total, gamma] + ([] if beta is None else [beta])
    y = layer_norm.reference(None, inputs, {"axis": attrs["axis"], "epsilon": attrs["epsilon"],
                                            "stash_type": attrs["stash_type"]})[0]
    return y.to(x.dtype), total.to(x.dtype)


@register
class SkipLayerNormalization(Op):
    name = "SkipLayerNormalization"
    domain = DOMAIN
    accumulates_in_fp32 = True  # statistics (and the sum feeding them) in float32 for half inputs
    attrs = {"axis": -1, "epsilon": 1e-5, "stash_type": 1, "sum_output": None}

    def check(self, node: Node) -> Optional[str]:
        if len(node.inputs) not in (3, 4) or any(v is None for v in node.inputs[:3]):
            return "takes x, skip, gamma and an optional beta"
        if len(node.outputs) not in (1, 2):
            return f"gives y and an optional sum, not {len(node.outputs)} outputs"
        reason = check_float_input(self.name, node)
        if reason:
            return reason
        dtypes = {v.dtype for v in node.inputs if v is not None and v.dtype is not None}
        if len(dtypes) > 1:
            return f"x, skip, gamma and beta must share one dtype, got {', '.join(sorted(d.short for d in dtypes))}"
        return sum_output_reason(node)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        x, skip = ctx.type(0), ctx.type(1)
        if x is None:
            return [None] * ctx.num_outputs
        shape = None if skip is None else broadcast_shapes(x.shape, skip.shape)
        if shape is not None:
            normalize_axis(int(ctx.attrs["axis"]), len(shape))  # an axis out of range is refused here
        return [TensorType(x.dtype, shape)] * ctx.num_outputs

    def reference(self, ctx, inputs, attrs):
        beta = inputs[3] if len(inputs) > 3 else None
        y, total = skip_layer_norm(inputs[0], inputs[1], inputs[2], beta, attrs)
        # Every tactic gives the outputs the layer has: the autotuner compares their signatures.
        wanted = attrs.get("sum_output")
        return [y, total] if wanted is None or wanted else [y]


__all__ = ["MAX_NORMALIZED_SIZE", "SkipLayerNormalization", "normalized_size", "row_broadcast_reason",
           "skip_layer_norm", "sum_output_reason"]
