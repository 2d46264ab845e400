""""triton_m<rows>" tactics for tensorkiln::ScaledDotProductAttention: a Triton flash-attention kernel.

cuDNN's and FlashAttention's kernels are built for long sequences: on BERT-base (sequence 128,
head dim 64) they run one CTA per 128 query rows and, at batch 1, leave most of the GPU idle
behind a few heads. This kernel (attention_kernels.py) reads Q, K, V and the additive mask
through their strides (the head-split views of a merged QKV GEMM, a [B, 1, 1, L] mask at stride
0), keeps the scores of one query block in registers with the online softmax in fp32, and writes
the output in Q's memory order, so the transpose and reshape that merge the heads again are views.

The query-block heights are separate tactics (as TensorRT's kernel variants are): the tuner
times each against cuDNN and the others on the layer's shapes and keeps the fastest, so the
short blocks win where there are few heads and the tall ones where there are many.

fp16/bf16 only: the products run on tensor cores with fp32 accumulation, and the softmax weights
are rounded to the input dtype before the product with V, as the reference's softmax output is.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ...ir import Node
from ._common import HALF_FLOATS, dtype_reason, input_shape, next_power_of_2, register, triton_missing
from .attention import _fused_operands, _mask_4d, _mask_reason, _same_batch

# name -> (BLOCK_M query rows, BLOCK_N keys per step, warps, pipeline stages). Measured on an H200
# with BERT-base's layer (12 heads, sequence 128, head dim 64, fp16, [B, 1, 1, 128] mask, Q/K/V
# strided views of one QKV product), the best of eleven configurations: batch 64, m64 22.0 us
# (cuDNN 26.2, 128 rows 23.8, m16 48.0); batch 1, m16 3.4 us (cuDNN 6.8, m64 3.6, 128 rows 4.7).
TILES = {
    "m64": (64, 64, 4, 2),
    "m16": (16, 128, 4, 2),
}
# Head dims above this do not fit the [BLOCK_M, head dim] accumulator in registers.
MAX_HEAD_DIM = 256


def _supports(node: Node) -> Optional[str]:
    reason = triton_missing() or dtype_reason(node, HALF_FLOATS) or _same_batch(node) or _mask_reason(node)
    if reason:
        return reason
    dims = [input_shape(node, i)[-1] for i in range(3)]
    if not all(isinstance(d, int) for d in dims):
        return "head dims unknown before run time"
    if dims[0] != dims[1]:
        return f"Q and K head dims differ ({dims[0]}, {dims[1]})"
    if max(dims) > MAX_HEAD_DIM:
        return f"head dim {max(dims)} (the kernel holds up to {MAX_HEAD_DIM} in registers)"
    return None


def _empty_in_order_of(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An empty 4-D tensor of `shape` laid out in `like`'s memory order (last dim innermost):
    [B, H, S, D] views of a [B, S, H, D] buffer get a [B, S, H, D] buffer too."""
    order = sorted(range(3), key=lambda d: (-like.stride(d) if like.shape[d] > 1 else 0, d)) + [3]
    buffer = torch.empty([shape[d] for d in order], dtype=like.dtype, device=like.device)
    inverse = [order.index(d) for d in range(4)]
    return buffer.permute(inverse)


class TritonAttention:
    def __init__(self, tile: str) -> None:
        self.tile = TILES[tile]
        self._kernel: Any = None

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        if self._kernel is None:
            from .attention_kernels import attention_kernel
            self._kernel = attention_kernel
        q4, k4, v4, mask, out_shape = _fused_operands(inputs)
        batch, heads, s_q, d_qk = q4.shape
        s_k, d_v = k4.shape[2], v4.shape[3]
        out = _empty_in_order_of(q4, (batch, heads, s_q, d_v))
        if mask is not None:
            mask = _mask_4d(mask, inputs[0].dim()).expand(batch, heads, s_q, s_k)
            mask_strides = mask.stride()
        else:
            mask_strides = (0, 0, 0, 0)
        block_m, block_n, warps, stages = self.tile
        if out.numel() and s_k == 0:
            out.zero_()  # softmax over no keys: an empty sum (torch's kernels give zeros too)
        elif out.numel():
            grid = ((s_q + block_m - 1) // block_m, batch * heads)
            self._kernel[grid](
                q4, k4, v4, mask if mask is not None else q4, out, heads, s_q, s_k, d_qk, d_v,
                float(attrs["scale"]), *q4.stride(), *k4.stride(), *v4.stride(), *mask_strides, *out.stride(),
                HAS_MASK=mask is not None, MASK_ONE_ROW=mask_strides[2] == 0 or s_q == 1, EVEN_N=s_k % block_n == 0,
                BLOCK_M=block_m, BLOCK_N=block_n,
                BLOCK_DK=max(16, next_power_of_2(d_qk)), BLOCK_DV=max(16, next_power_of_2(d_v)),
                num_warps=warps, num_stages=stages)
        return out if out.dim() == len(out_shape) else out.reshape(out_shape)


def _register() -> None:
    for tile in TILES:
        impl = TritonAttention(tile)
        register(f"triton_{tile}", "ScaledDotProductAttention", impl.run, _supports, domain="tensorkiln",
                 source="triton")


_register()

__all__ = ["TILES", "TritonAttention"]
