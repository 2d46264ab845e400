"""Which layers are numerically sensitive and keep FP32 unless the user forces otherwise.

DESIGN.md: "Numerically sensitive layers (normalisation statistics, softmax, large
reductions) accumulate in FP32 unless the user forces otherwise". Ops whose every
implementation accumulates in FP32 internally (`Op.accumulates_in_fp32`: norms, softmax,
means) and whose output is bounded by their input run with FP16/BF16 inputs and outputs,
as TensorRT runs them: no Cast layers around them. The others (and sums whose result grows
with the number of terms) stay FP32 layers: their inputs are cast up, their outputs stay
FP32 until a lower-precision consumer casts them down. Only `precision_constraints="obey"`
with an explicit per-layer precision overrides this.

The policy is data: one row per op type with the reason a user sees in `kiln inspect`.
"""

from __future__ import annotations

import math
from typing import Optional

from ..ir import Node, TensorType
from ..ops import get_op

# op type -> why it stays FP32. Normalisations compute a mean and a variance (a sum of
# squares), softmax normalises by a sum of exponentials: in FP16 the sums overflow
# (65504) or lose the small terms, and the statistics feed every output element.
SENSITIVE_OPS: dict[str, str] = {
    "LayerNormalization": "normalisation statistics (mean, variance)",
    "GroupNormalization": "normalisation statistics (mean, variance)",
    "InstanceNormalization": "normalisation statistics (mean, variance)",
    "MeanVarianceNormalization": "normalisation statistics (mean, variance)",
    "RMSNormalization": "normalisation statistics (mean of squares)",
    "SimplifiedLayerNormalization": "normalisation statistics (mean of squares)",
    "SkipLayerNormalization": "normalisation statistics (mean, variance)",
    "SkipSimplifiedLayerNormalization": "normalisation statistics (mean of squares)",
    "EmbedLayerNormalization": "normalisation statistics (mean, variance)",
    "LpNormalization": "normalisation by a norm (a sum of powers)",
    "LRN": "normalisation by a windowed sum of squares",
    "Softmax": "softmax (normalises by a sum of exponentials)",
    "LogSoftmax": "log-softmax (a log of a sum of exponentials)",
    "Attention": "attention (contains a softmax)",
    "SoftmaxCrossEntropyLoss": "a loss (softmax and a mean over the batch)",
    "NegativeLogLikelihoodLoss": "a loss (a mean over the batch)",
}

# Sum-like reductions: sensitive when they are large (error and overflow grow with the
# number of summed terms). Max/Min/ArgMax reductions are exact in any precision and are
# not listed.
SUM_REDUCTIONS: dict[str, str] = {
    "ReduceSum": "sum", "ReduceMean": "mean", "ReduceSumSquare": "sum of squares", "ReduceL1": "L1 norm",
    "ReduceL2": "L2 norm", "ReduceLogSum": "log of a sum", "ReduceLogSumExp": "log-sum-exp",
    "ReduceProd": "product", "GlobalAveragePool": "mean over the spatial dimensions",
    "GlobalLpPool": "Lp norm over the spatial dimensions", "CumSum": "running sum",
}

# A reduction over at most this many elements (known at build time) is not "large": its
# FP16 rounding error stays near the FP16 tolerance (a few ulps of 2^-11 per term). A
# reduction of unknown size counts as large.
SMALL_REDUCTION = 16


# Reductions whose result stays within the range of their input (a mean of FP16 values
# fits FP16): safe with FP16 I/O when the op accumulates in FP32.
BOUNDED_REDUCTIONS = frozenset({"ReduceMean", "GlobalAveragePool"})


def sensitivity_reason(node: Node) -> Optional[str]:
    """Why `node` must stay FP32 under the default policy, or None when it may run lower."""
    op = get_op(node.op_type, node.domain)
    accumulates = op is not None and op.accumulates_in_fp32
    what = SENSITIVE_OPS.get(node.op_type)
    if what is not None:
        return None if accumulates else f"numerically sensitive: {what}"
    what = SUM_REDUCTIONS.get(node.op_type)
    if what is None or (accumulates and node.op_type in BOUNDED_REDUCTIONS):
        return None
    count = reduced_element_count(node)
    if count is not None and count <= SMALL_REDUCTION:
        return None
    size = "of unknown size" if count is None else f"over {count} elements"
    return f"numerically sensitive: a large reduction ({what} {size})"


def reduced_element_count(node: Node) -> Optional[int]:
    """How many input elements each output element of a reduction combines; None if unknown."""
    x = node.inputs[0] if node.inputs else None
    shape = x.shape if x is not None and isinstance(x.type, TensorType) else None
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    rank = len(shape)
    if node.op_type in ("GlobalAveragePool", "GlobalLpPool"):
        return math.prod(shape[2:])
    if node.op_type == "CumSum":
        axis = _const_ints(node, 1)
        if axis is None or len(axis) != 1 or not -rank <= axis[0] < max(rank, 1):
            return None
        return shape[axis[0] % rank] if rank else 1
    axes = _reduce_axes(node)
    if axes is None:
        return None
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return 1
        return math.prod(shape)
    if any(not -rank <= a < max(rank, 1) for a in axes):
        return None
    return math.prod(shape[a % rank] for a in set(a % rank for a in axes)) if rank else 1


def _reduce_axes(node: Node) -> Optional[list[int]]:
    """The reduced axes ([] for "all"), from the attribute (old opsets) or the constant input."""
    if "axes" in node.attrs and node.attrs["axes"] is not None:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        return _const_ints(node, 1)
    return []


def _const_ints(node: Node, i: int) -> Optional[list[int]]:
    if i >= len(node.inputs) or node.inputs[i] is None or node.inputs[i].const is None:
        return None
    return [int(v) for v in node.inputs[i].const.reshape(-1)]
