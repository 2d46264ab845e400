""""triton" tactic for tensorkiln::SkipLayerNormalization: the residual add and the layer norm in one kernel.

Unfused, BERT-base (fp16, batch 64, seq 128, H200) spends 8.4 us per layer in torch's add and 21 us
in its layer norm kernel; torch.compile's single Triton kernel takes 9.3 us. This kernel reads x,
skip, gamma and beta once and writes y (and the sum, when the layer gives it) once.

One program normalizes ROWS rows, each held whole in registers (BLOCK_N = next power of two >= N,
masked). ROWS is a power of two chosen from the row count: enough programs to fill the GPU at small
batches, without thousands of one-row programs at large ones. x and skip are loaded in their dtype
and summed in fp32; mean and variance are two passes over the registers (no E[x²] - E[x]²
cancellation); y and the sum are rounded once to the input dtype, as the reference does.

Layout: the normalized dims are flattened to one row of N elements, so x (and skip) must be
contiguous; other tensors are made so with .contiguous() (a copy). skip may broadcast over whole
rows (ops/skip_layer_norm.py: row r reads skip row r mod skip_rows). Operands in another form,
possible only where shapes were symbolic at build time, run the op's reference.

The kernel is in layer_norm_kernels.py, imported on the first launch: CPU installs lack triton.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ...ir import DType, Node
from ...ops import get_op
from ...ops.fused_conv import DOMAIN
from ...ops.registry import normalize_axis
from ...ops.skip_layer_norm import MAX_NORMALIZED_SIZE, normalized_size, row_broadcast_reason
from ._common import (DerivedTensors, inputs_dtype_reason, input_shape, multiprocessor_count, next_power_of_2,
                      optional_input, register, triton_missing)

OP_TYPE = "SkipLayerNormalization"

# Elements one program holds per loaded tensor (ROWS * BLOCK_N): 16 fp32 values per thread at 4
# warps. Measured at BERT-base b64 ([8192, 768] fp16, H200, after the GEMM that writes x, GPU kept
# busy): 2 rows of 1024 with 4 warps 10.2 us, 4 rows 10.5, 8 rows with 8 warps 11.3.
_ELEMENTS_PER_PROGRAM = 2048
# Programs wanted per multiprocessor before ROWS grows beyond 1.
_PROGRAMS_PER_SM = 4


def row_vector(weights: DerivedTensors, t: Optional[torch.Tensor], normalized: tuple[int, ...]
               ) -> Optional[torch.Tensor]:
    """gamma or beta as the normalized shape's contiguous elements (broadcast once per weight)."""
    if t is None or (tuple(t.shape) == normalized and t.is_contiguous()):
        return t
    return weights.get(t, ("row", normalized), lambda s: s.expand(normalized).contiguous())


def _rows_per_program(rows: int, block_n: int, multiprocessors: int, elements_per_program: int) -> int:
    """ROWS: 1 until there are enough rows for _PROGRAMS_PER_SM programs per multiprocessor, then the
    power of two that keeps about that many, capped so one program holds `elements_per_program`."""
    cap = max(1, elements_per_program // block_n)
    per_program = max(1, rows // (_PROGRAMS_PER_SM * multiprocessors))
    return min(cap, 1 << (per_program.bit_length() - 1))


def _warps_for(rows: int, block_n: int) -> int:
    """4 warps up to 4096 elements per program, more for wider blocks (8192: 8), at most 16."""
    return min(16, max(4, rows * block_n // 1024))


def row_launch(rows: int, n: int, device: torch.device, elements_per_program: int = _ELEMENTS_PER_PROGRAM
               ) -> tuple[tuple[int], dict[str, int]]:
    """The grid and the launch constants (ROWS, BLOCK_N, num_warps) of a kernel normalizing `rows`
    rows of `n` elements, each program ROWS whole rows in registers."""
    block_n = next_power_of_2(n)
    per_program = _rows_per_program(rows, block_n, multiprocessor_count(device), elements_per_program)
    return (-(-rows // per_program),), {"ROWS": per_program, "BLOCK_N": block_n,
                                        "num_warps": _warps_for(per_program, block_n)}


class TritonSkipLayerNorm:
    def __init__(self) -> None:
        self._kernel: Any = None
        self.weights = DerivedTensors()

    def supports(self, node: Node) -> Optional[str]:
        missing = triton_missing()
        if missing:
            return missing
        reason = inputs_dtype_reason(node)
        if reason:
            return reason
        if int(node.attrs.get("stash_type", 1)) != DType.FLOAT32.value:
            return f"stash_type {node.attrs.get('stash_type')} (the kernel keeps statistics in float32)"
        x, skip = input_shape(node, 0), input_shape(node, 1)
        if x is None or skip is None:
            return "input shapes unknown before run time"
        if not x:
            return "a scalar x has no row to normalize"
        axis = normalize_axis(int(node.attrs.get("axis", -1)), len(x))
        size = normalized_size(x, axis)
        if size is None:
            return f"normalized dims {list(x[axis:])} are not static"
        if size > MAX_NORMALIZED_SIZE:
            return f"rows of {size} elements exceed one block ({MAX_NORMALIZED_SIZE})"
        return row_broadcast_reason(x, skip, axis)

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> list[torch.Tensor]:
        x, skip, gamma, beta = inputs[0], inputs[1], inputs[2], optional_input(inputs, 3)
        axis = normalize_axis(int(attrs.get("axis", -1)), x.dim())
        if row_broadcast_reason(tuple(x.shape), tuple(skip.shape), axis) is not None:
            # Shapes that were symbolic at build time came out in another form (rare: the reference's outputs
            # are its own tensors, not the arena's).
            return get_op(OP_TYPE, DOMAIN).reference(ctx, inputs, attrs)
        normalized = tuple(x.shape[axis:])
        n = math.prod(normalized)
        rows = x.numel() // n if n else 0
        x, skip = x.contiguous(), skip.contiguous()
        y = ctx.output(0, x.shape, x.dtype)
        store_sum = attrs.get("sum_output") is None or bool(attrs.get("sum_output"))
        total = ctx.output(1, x.shape, x.dtype) if store_sum else y  # y stands in for the unused pointer
        if rows and n:
            if self._kernel is None:
                from .layer_norm_kernels import skip_layer_norm_kernel
                self._kernel = skip_layer_norm_kernel
            grid, launch = row_launch(rows, n, x.device)
            beta_row = row_vector(self.weights, beta, normalized)
            gamma_row = row_vector(self.weights, gamma, normalized)
            skip_rows = max(1, skip.numel() // n)
            self._kernel[grid](
                x, skip, gamma_row, beta_row if beta_row is not None else gamma_row, y, total, rows, n,
                skip_rows, float(attrs.get("epsilon", 1e-5)),
                HAS_BETA=beta_row is not None, STORE_SUM=store_sum, SKIP_REUSED=skip_rows < rows,
                WIDE_INDEX=(rows + launch["ROWS"]) * n >= 2 ** 31, **launch)
        return [y, total] if store_sum else [y]


def _register() -> None:
    tactic = TritonSkipLayerNorm()
    register("triton", OP_TYPE, tactic.run, tactic.supports, domain=DOMAIN, source="triton", arena_outputs=True)


_register()

__all__ = ["TritonSkipLayerNorm", "row_launch", "row_vector"]
