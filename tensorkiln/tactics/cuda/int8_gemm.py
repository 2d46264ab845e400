""""int8_mm": MatMulInteger and QLinearMatMul on the int8 tensor cores (torch._int_mm: cuBLASLt's int8 GEMM
with int32 accumulation), where the reference multiplies in float64.

Zero points come out of the product instead of going into the operands. With a' the int8 form of a
(a itself, or for uint8 a - 128: the same bits with the top one flipped) and za' = za - (that shift),
and b', zb' likewise,

    (a - za) @ (b - zb) = a' @ b' - zb' * rowsum(a') - za' * colsum(b') + K * za' * zb'

where za' is a scalar or one value per row and zb' a scalar or one per column (ONNX allows nothing
else). Every term is exact in int32 while K <= MAX_K: a' @ b' is at most 2**14 * K, the middle terms
255 * 128 * K, the last 255**2 * K; supports() declines layers with a larger (or unknown) K. The
result therefore equals the reference's bit for bit.

torch._int_mm takes 2-D int8 operands [M, K] x [K, N] with M > 16 and K, N multiples of 8: a's leading
dims are flattened into rows, and M, K and N are zero-padded up (zero rows and columns of a' and b'
add nothing to a' @ b'; the corrections use the true K). The weight's int8 form, padded and stored
[N, K] (the layout cuBLASLt's int8 kernels read), and its column sums are made once per weight: b must
be a constant (a quantized model's weights are).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ...ir import Node
from ...ops.matmul_integer import QUANT_DTYPES
from ...ops.qlinear_matmul import requantize
from ..derived import DerivedTensors
from ._common import input_dtype, input_shape, optional_input, register

# Largest K for which every term of the zero-point decomposition fits int32 (255**2 * K < 2**31).
MAX_K = 32768
_ROW_MULTIPLE = 8
_MIN_ROWS = 17  # torch._int_mm on CUDA wants more than 16 rows
_WEIGHTS = DerivedTensors()


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _as_int8(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """t's values minus a shift that brings them into int8, and the shift (128 for uint8, else 0)."""
    if t.dtype == torch.uint8:
        return (t ^ 128).view(torch.int8), 128
    return t, 0


def _padded(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    if tuple(t.shape) == (rows, cols):
        return t.contiguous()
    out = torch.zeros((rows, cols), dtype=t.dtype, device=t.device)
    out[:t.shape[0], :t.shape[1]] = t
    return out


def _weight_form(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """b' [K, N] as a [K_pad, N_pad] view of a contiguous [N_pad, K_pad] int8 tensor, colsum(b') (int32 [N])
    and b's shift."""
    b8, shift = _as_int8(b)
    k, n = b8.shape
    nk = _padded(b8.t(), _round_up(n, _ROW_MULTIPLE), _round_up(k, _ROW_MULTIPLE))
    return nk.t(), b8.sum(dim=0, dtype=torch.int32), shift


def _zero_point(zp: Optional[torch.Tensor], shift: int) -> torch.Tensor | int:
    """zp - shift as int32 (an int where zp is absent)."""
    if zp is None:
        return -shift
    return zp.to(torch.int32).reshape(-1) - shift


def _subtract_outer(product: torch.Tensor, rows: torch.Tensor | int, cols: torch.Tensor | int) -> None:
    """product -= rows (x) cols in place, rows [M] and cols [N] (or one value, a tensor or an int, for all)."""
    if (isinstance(rows, int) and rows == 0) or (isinstance(cols, int) and cols == 0):
        return  # an int8 operand without a zero point: nothing to take out
    if isinstance(rows, torch.Tensor) and rows.numel() > 1 and isinstance(cols, torch.Tensor) and cols.numel() > 1:
        product.addr_(rows, cols, alpha=-1)
        return
    rows = rows.reshape(-1, 1) if isinstance(rows, torch.Tensor) else rows
    cols = cols.reshape(1, -1) if isinstance(cols, torch.Tensor) else cols
    product.sub_(rows * cols)


def int8_product(a: torch.Tensor, a_zero_point: Optional[torch.Tensor], b: torch.Tensor,
                 b_zero_point: Optional[torch.Tensor]) -> torch.Tensor:
    """(a - a_zero_point) @ (b - b_zero_point) as int32, a [..., M, K] and b [K, N] int8/uint8 with K <= MAX_K."""
    k, n = b.shape
    b_nk, b_colsum, b_shift = _WEIGHTS.get(b, "int8_mm", _weight_form)
    a8, a_shift = _as_int8(a)
    lead = tuple(a8.shape[:-1])
    rows = a8.reshape(-1, k)
    m = rows.shape[0]
    a_rows = _padded(rows, max(m, _MIN_ROWS), _round_up(k, _ROW_MULTIPLE))
    product = torch._int_mm(a_rows, b_nk)[:m, :n]
    za = _zero_point(a_zero_point, a_shift)
    zb = _zero_point(b_zero_point, b_shift)
    row_sums = rows.sum(dim=1, dtype=torch.int32)
    # product - row_sums (x) zb - za (x) (colsum - K zb): two in-place passes over the product, each
    # term a broadcast vector where its zero point is one value, else a rank-1 update.
    _subtract_outer(product, row_sums, zb)
    if isinstance(za, torch.Tensor) and za.numel() > 1:
        # One zero point per row of the last-but-one axis repeats over the flattened leading dims.
        za = za.expand(lead).reshape(m)
    _subtract_outer(product, za, b_colsum - zb * k)
    return product.reshape(*lead, n)


def supports(node: Node) -> Optional[str]:
    b_index = 3 if node.op_type == "QLinearMatMul" else 1
    for i in (0, b_index):
        if input_dtype(node, i) not in QUANT_DTYPES:
            return f"input {i} is not int8/uint8 (or its dtype is unknown)"
    a_shape, b_shape = input_shape(node, 0), input_shape(node, b_index)
    if a_shape is None or len(a_shape) < 2:
        return "a is not a matrix or a batch of them (rank >= 2)"
    if b_shape is None or len(b_shape) != 2:
        return "b is not 2-D (a batch of b matrices is not taken)"
    if node.inputs[b_index].const is None:
        return "b is not a constant (its int8 form and column sums are made once per weight)"
    k = b_shape[0]
    if not isinstance(k, int):
        return "b's row count K is not known at build time"
    if k > MAX_K:
        return f"K = {k} > {MAX_K}: the zero-point terms could overflow int32"
    if not hasattr(torch, "_int_mm"):
        return "this torch has no torch._int_mm"
    a_zp = node.inputs[2] if len(node.inputs) > 2 else None
    if a_zp is not None and a_zp.shape is not None and len(a_zp.shape) > 1:
        return "a's zero point is neither a scalar nor one value per row"
    return None


def run_matmul_integer(ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
    return int8_product(inputs[0], optional_input(inputs, 2), inputs[1], optional_input(inputs, 3))


def run_qlinear_matmul(ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale = inputs[:7]
    acc = int8_product(a, a_zp, b, b_zp)
    return requantize(acc, a.dim(), a_scale, b_scale, y_scale, optional_input(inputs, 7), a.dtype)


def _register() -> None:
    register("int8_mm", "MatMulInteger", run_matmul_integer, supports, source="cublaslt", fresh_outputs=True)
    register("int8_mm", "QLinearMatMul", run_qlinear_matmul, supports, source="cublaslt", fresh_outputs=True)


_register()
