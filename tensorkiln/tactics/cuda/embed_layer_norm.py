""""triton" tactic for tensorkiln::EmbedLayerNormalization: the lookups, their sum and the layer norm in one kernel.

Unfused, BERT-base's embeddings at batch 1 (fp16, H200) are four kernels: two row gathers, their
add, and the SkipLayerNormalization that adds the folded position rows; this kernel reads each
id, each gathered row, the dense row, gamma and beta once and writes y (and the sum, when the layer
gives it) once.

One program normalizes one row, held whole in registers. Each row waits on its ids before it can
load its table rows, so many small programs in flight hide that chain best: where there are rows
enough to fill the GPU many times over, one warp per row (BERT-base b64, [8192, 768] fp16 on an
H200, GPU kept busy: 8.0 us, against 11.1 us with SkipLayerNormalization's 4 rows of 4 warps and
7.6 us for torch.compile's kernel); else 4 warps, as row_launch gives. The gathered rows are loaded
in the table dtype and summed in fp32; mean and variance are two passes over the registers; y and
the sum are rounded once.

Ids: a negative id counts from the end of its table, as Gather's. An id still outside the table
gives a row of zeros (reading it would fault; checking it would cost a host synchronization per
call), as the Triton Gather tactic does; the reference tactic raises.

The kernel is in layer_norm_kernels.py, imported on the first launch: CPU installs lack triton.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ...ir import DType, Node
from ...ops import get_op
from ...ops.embed_layer_norm import DENSE, lookup_pairs
from ...ops.fused_conv import DOMAIN
from ...ops.skip_layer_norm import MAX_NORMALIZED_SIZE, row_broadcast_reason
from ._common import (DerivedTensors, FAST_FLOATS, dtype_reason, input_shape, multiprocessor_count, register,
                      triton_missing)
from .skip_layer_norm import row_launch, row_vector

OP_TYPE = "EmbedLayerNormalization"
# Lookups one launch sums (BERT has two left after folding: words and token types).
MAX_LOOKUPS = 3
# Rows per multiprocessor from which one-warp programs fill the GPU (see the module docstring).
_ONE_WARP_ROWS_PER_SM = 16


class TritonEmbedLayerNorm:
    def __init__(self) -> None:
        self._kernel: Any = None
        self.weights = DerivedTensors()

    def supports(self, node: Node) -> Optional[str]:
        missing = triton_missing()
        if missing:
            return missing
        reason = dtype_reason(node, FAST_FLOATS, 0)
        if reason:
            return reason
        if int(node.attrs.get("stash_type", 1)) != DType.FLOAT32.value:
            return f"stash_type {node.attrs.get('stash_type')} (the kernel keeps statistics in float32)"
        pairs = lookup_pairs(node.inputs)
        if len(pairs) > MAX_LOOKUPS:
            return f"{len(pairs)} lookups (the kernel sums at most {MAX_LOOKUPS})"
        table = pairs[0][1].shape
        if table is None or not isinstance(table[1], int):
            return "the tables' row width is not static"
        if table[1] > MAX_NORMALIZED_SIZE:
            return f"rows of {table[1]} elements exceed one block ({MAX_NORMALIZED_SIZE})"
        ids, dense = pairs[0][0].shape, input_shape(node, DENSE)
        if dense is not None and ids is not None:
            return row_broadcast_reason(tuple(ids) + (table[1],), dense, len(ids))
        return None

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> list[torch.Tensor]:
        pairs = lookup_pairs(inputs)
        gamma, beta, dense = inputs[0], inputs[1], inputs[DENSE]
        ids0, table0 = pairs[0]
        n = int(table0.shape[1])
        shape = tuple(ids0.shape) + (n,)
        if dense is not None and row_broadcast_reason(shape, tuple(dense.shape), len(shape) - 1) is not None:
            # Shapes that were symbolic at build time came out in another form (rare: the reference's outputs
            # are its own tensors, not the arena's).
            return get_op(OP_TYPE, DOMAIN).reference(ctx, inputs, attrs)
        y = ctx.output(0, shape, table0.dtype)
        store_sum = attrs.get("sum_output") is None or bool(attrs.get("sum_output"))
        total = ctx.output(1, shape, table0.dtype) if store_sum else y  # y stands in for the unused pointer
        rows = math.prod(shape[:-1])
        if rows and n:
            if self._kernel is None:
                from .layer_norm_kernels import embed_layer_norm_kernel
                self._kernel = embed_layer_norm_kernel
            flat = [(ids.reshape(-1).contiguous(), table.contiguous(), int(table.shape[0])) for ids, table in pairs]
            while len(flat) < MAX_LOOKUPS:
                flat.append(flat[0])  # never read: LOOKUPS says how many are
            grid, launch = _launch(rows, n, table0.device)
            gamma_row, beta_row = row_vector(self.weights, gamma, (n,)), row_vector(self.weights, beta, (n,))
            dense_flat = dense.contiguous() if dense is not None else y
            lookups = [arg for entry in flat for arg in entry]
            self._kernel[grid](
                *lookups, dense_flat, gamma_row, beta_row if beta_row is not None else gamma_row, y, total, rows, n,
                max(1, dense_flat.numel() // n) if dense is not None else 1, float(attrs.get("epsilon", 1e-5)),
                LOOKUPS=len(pairs), HAS_DENSE=dense is not None, HAS_BETA=beta_row is not None, STORE_SUM=store_sum,
                **launch)
        return [y, total] if store_sum else [y]


def _launch(rows: int, n: int, device: torch.device) -> tuple[tuple[int], dict[str, int]]:
    """One row per program; one warp per 1024 elements where there are rows for
    _ONE_WARP_ROWS_PER_SM programs per multiprocessor, else row_launch's warps."""
    grid, launch = row_launch(rows, n, device, elements_per_program=1)
    if rows >= _ONE_WARP_ROWS_PER_SM * multiprocessor_count(device):
        launch["num_warps"] = max(1, launch["BLOCK_N"] // 1024)
    return grid, launch


def _register() -> None:
    tactic = TritonEmbedLayerNorm()
    register("triton", OP_TYPE, tactic.run, tactic.supports, domain=DOMAIN, source="triton", arena_outputs=True)


_register()

__all__ = ["MAX_LOOKUPS", "TritonEmbedLayerNorm"]
