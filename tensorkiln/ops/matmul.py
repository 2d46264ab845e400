"""MatMul: numpy-style matrix product (1-D operands promoted and the extra dim dropped,
batch dims broadcast).

Torch multiplies integers only on the CPU and lacks uint16/32/64 matrix products, so
integer products run on the CPU in a signed dtype whose two's-complement arithmetic gives
the same bits (wrap-around as ONNX's fixed-width integers), then go back to the device.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, Shape, TensorType, broadcast_shapes
from .registry import InferContext, Op, register

# Signed dtype whose wrapping arithmetic reproduces the unsigned dtype's.
_UNSIGNED_AS_SIGNED = {torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}


MATMUL_DTYPES = frozenset({DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64, DType.INT8, DType.UINT8,
                           DType.INT16, DType.UINT16, DType.INT32, DType.UINT32, DType.INT64, DType.UINT64})


def integer_matmul(a: torch.Tensor, b: torch.Tensor, out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Exact integer matrix product with wrap-around in `out_dtype` (default a's dtype)."""
    out_dtype = out_dtype or a.dtype
    device = a.device
    a_cpu, b_cpu = a.cpu(), b.cpu()
    if a_cpu.dtype == torch.uint64:
        a_cpu, b_cpu = a_cpu.view(torch.int64), b_cpu.to(torch.uint64).view(torch.int64)
        return torch.matmul(a_cpu, b_cpu).view(torch.uint64).to(out_dtype).to(device)
    wide = _UNSIGNED_AS_SIGNED.get(a_cpu.dtype, torch.int64)
    out = torch.matmul(a_cpu.to(wide), b_cpu.to(wide))
    return out.to(out_dtype).to(device)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point():
        return torch.matmul(a, b.to(a.dtype))
    return integer_matmul(a, b)


def matmul_shape(a: Shape, b: Shape) -> Shape:
    """Output shape of numpy matmul over possibly symbolic dims."""
    if a is None or b is None:
        return None
    if len(a) == 0 or len(b) == 0:
        raise ValueError("MatMul operands must have rank >= 1")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    k_a, k_b = a2[-1], b2[-2]
    if isinstance(k_a, int) and isinstance(k_b, int) and k_a != k_b:
        raise ValueError(f"MatMul inner dimensions differ: {k_a} vs {k_b}")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = list(batch) + [a2[-2], b2[-1]]
    if len(b) == 1:
        out.pop(-1)
    if len(a) == 1:
        out.pop(-2 if len(b) != 1 else -1)
    return tuple(out)


@register
class MatMul(Op):
    name = "MatMul"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        a, b = ctx.type(0), ctx.type(1)
        if a is None:
            return [None]
        return [TensorType(a.dtype, matmul_shape(a.shape, None if b is None else b.shape))]

    def check(self, node) -> Optional[str]:
        dt = node.inputs[0].dtype
        if dt is not None and dt not in MATMUL_DTYPES:
            return f"MatMul of {dt.short} tensors is not supported"
        return None

    def reference(self, ctx, inputs, attrs):
        return matmul(inputs[0], inputs[1])
