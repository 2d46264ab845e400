"""EmbedLayerNormalization (domain "tensorkiln"): embedding lookups, their sum and the LayerNormalization
after it, one layer (as com.microsoft.EmbedLayerNormalization in ONNX Runtime's transformer fusions).

    sum = table_0[ids_0] + table_1[ids_1] + ... + dense      (each a Gather on axis 0 of a 2-D table)
    y   = LayerNormalization(sum, gamma, beta; axis=-1, epsilon, stash_type)

Inputs (gamma, beta?, dense?, ids_0, table_0, ids_1, table_1, ...): at least one (ids, table) pair.
Every table is [rows, H] and every ids tensor has one shape, the output's leading dims; an index
may be negative (counted from the end, as Gather's); one outside [-rows, rows) is an error on the
CPU and a row of zeros on a GPU (`_shape_common.select_indices`). `dense` (a folded position embedding, say)
covers whole rows: the output's trailing dims with leading 1s ([S, H] or [1, S, H] over
[B, S, H], never of a higher rank than the output), so output row r adds dense row r mod (dense
rows). One float dtype throughout.

Outputs: y, and optionally the sum (a pre-LN transformer reads it as its first residual);
`sum_output` records which, as in SkipLayerNormalization. The sum is computed in the statistics
dtype (float32 for float16/bfloat16 tables) and feeds the statistics unrounded; y and the sum are
each rounded once to the table dtype. The unfused graph rounds every gathered row and partial sum
to the table dtype, so the fused layer is the more accurate of the two.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..ir import Node, TensorType, Value
from ..ir.shape import Dim
from ._shape_common import select_indices
from .fused_conv import DOMAIN
from .layer_normalization import check_float_input, stash_dtype
from .registry import InferContext, Op, get_op, register
from .skip_layer_norm import row_broadcast_reason, sum_output_reason

# Inputs before the (ids, table) pairs.
FIXED_INPUTS = 3
GAMMA, BETA, DENSE = 0, 1, 2


def lookup_pairs(items: Sequence[Any]) -> list[tuple[Any, Any]]:
    """The (ids, table) pairs of a node's inputs, or of the tensors a tactic is given."""
    rest = list(items[FIXED_INPUTS:])
    return list(zip(rest[0::2], rest[1::2]))


def embed_layer_norm(inputs: Sequence[Optional[torch.Tensor]], attrs: dict[str, Any]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, sum) in the tables' dtype, the sum taken in the statistics dtype (or the tables', if wider)."""
    pairs = lookup_pairs(inputs)
    dtype = pairs[0][1].dtype
    compute = stash_dtype(attrs["stash_type"]).torch
    wide = compute if compute.itemsize >= dtype.itemsize else dtype
    total: Optional[torch.Tensor] = None
    for ids, table in pairs:
        rows = select_indices(table.to(wide), 0, ids, "EmbedLayerNormalization")
        rows = rows.reshape(tuple(ids.shape) + (int(table.shape[1]),))
        total = rows if total is None else total + rows
    dense = inputs[DENSE]
    if dense is not None:
        total = total + dense.to(wide)
    gamma, beta = inputs[GAMMA], inputs[BETA]
    layer_norm = get_op("LayerNormalization")
    y = layer_norm.reference(None, [total, gamma] + ([] if beta is None else [beta]),
                             {"axis": -1, "epsilon": attrs["epsilon"], "stash_type": attrs["stash_type"]})[0]
    return y.to(dtype), total.to(dtype)


@register
class EmbedLayerNormalization(Op):
    name = "EmbedLayerNormalization"
    domain = DOMAIN
    accumulates_in_fp32 = True  # the sum and its statistics in float32 for half tables
    attrs = {"epsilon": 1e-5, "stash_type": 1, "sum_output": None}

    def check(self, node: Node) -> Optional[str]:
        inputs = node.inputs
        if len(inputs) < FIXED_INPUTS + 2 or (len(inputs) - FIXED_INPUTS) % 2:
            return "takes gamma, beta?, dense? and then (ids, table) pairs, at least one"
        if inputs[GAMMA] is None:
            return "gamma is required"
        pairs = lookup_pairs(inputs)
        if any(ids is None or table is None for ids, table in pairs):
            return "every (ids, table) pair needs both tensors"
        if len(node.outputs) not in (1, 2):
            return f"gives y and an optional sum, not {len(node.outputs)} outputs"
        for ids, _ in pairs:
            if ids.dtype is not None and ids.dtype.short not in ("int32", "int64"):
                return f"ids '{ids.name}' are {ids.dtype.short}, not int32 or int64"
        for _, table in pairs:
            if table.shape is not None and len(table.shape) != 2:
                return f"table '{table.name}' has rank {len(table.shape)}, not 2"
        floats = [v for v in [inputs[GAMMA], inputs[BETA], inputs[DENSE]] + [t for _, t in pairs] if v is not None]
        dtypes = {v.dtype for v in floats if v.dtype is not None}
        if len(dtypes) > 1:
            return f"gamma, beta, dense and the tables must share one dtype, got {', '.join(sorted(d.short for d in dtypes))}"
        reason = check_float_input(self.name, node)  # gamma's dtype: the tables' too
        if reason:
            return reason
        shapes = {tuple(ids.shape) for ids, _ in pairs if ids.shape is not None}
        if len(shapes) > 1:
            return f"every ids tensor must have one shape, got {sorted(list(s) for s in shapes)}"
        widths = {t.shape[1] for _, t in pairs if t.shape is not None}
        if len(widths) > 1:
            return f"every table must have the same row width, got {sorted(widths, key=str)}"
        return sum_output_reason(node)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        ids, table = ctx.type(FIXED_INPUTS), ctx.type(FIXED_INPUTS + 1)
        if table is None:
            return [None] * ctx.num_outputs
        if ids is None or ids.shape is None or table.shape is None:
            return [TensorType(table.dtype, None)] * ctx.num_outputs
        shape = tuple(ids.shape) + (table.shape[1],)
        dense = ctx.type(DENSE)
        if dense is not None and dense.shape is not None:
            reason = row_broadcast_reason(shape, dense.shape, len(shape) - 1)
            if reason is not None:
                raise ValueError(f"dense {list(dense.shape)} does not add to the lookups' rows {list(shape)}: {reason}")
        return [TensorType(table.dtype, shape)] * ctx.num_outputs

    def index_inputs(self, node: Node) -> list[tuple[Value, Dim]]:
        return [(ids, table.shape[0]) for ids, table in lookup_pairs(node.inputs)
                if ids is not None and table is not None and table.shape]

    def reference(self, ctx, inputs, attrs):
        y, total = embed_layer_norm(inputs, attrs)
        wanted = attrs.get("sum_output")
        return [y, total] if wanted is None or wanted else [y]


__all__ = ["DENSE", "EmbedLayerNormalization", "FIXED_INPUTS", "embed_layer_norm", "lookup_pairs"]
