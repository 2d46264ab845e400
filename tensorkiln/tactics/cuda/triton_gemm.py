""""triton_gemm_<tile>" tactics for tensorkiln::FusedMatMul: the product and its whole epilogue in one kernel.

cuBLASLt fuses a bias and ReLU (or the tanh GELU) into its GEMMs, but not the erf GELU of BERT's
feed-forward layer, a residual, or the other activations: those cost one more pass over the
output. On BERT-base at batch 64 (fp16, H200) the GELU after the [8192 x 768] x [768 x 3072]
GEMM took 36 us next to the GEMM's 61 us. This kernel applies bias, activation and residual to
the fp32 accumulator before the single store (rounding once, where the reference rounds the
product and then the activation). It is a plain (non-persistent, no TMA) Triton GEMM: about 60%
of cuBLAS's speed on Hopper for large products, so it wins only where the epilogue pass it saves
costs more than that.

The tile shapes are separate tactics (as TensorRT's kernel variants are): the tuner times each
against cuBLAS on the layer's real shapes and keeps the fastest, so a tile that loses (small M,
where cuBLAS splits K) is simply not chosen. Only layers with an epilogue beyond the bias are
candidates: for a bias alone cuBLASLt's epilogue already does the same in one kernel.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ...ir import Node
from ._common import DerivedTensors, HALF_FLOATS, as_dtype, dtype_reason, input_shape, optional_input, register, \
    triton_missing

# Epilogue activation name -> the kernel's activation code (gemm_kernels: NONE, RELU, GELU, ...).
ACTIVATIONS = {"": 0, "Relu": 1, "Gelu": 2, "GeluTanh": 3, "Sigmoid": 4, "Tanh": 5, "Silu": 6}

# name -> (BM, BN, BK, warps, stages): a wide tile for many rows, a short one for few. Measured
# on an H200 for BERT-base's feed-forward GEMM + GELU at batch 64 ([8192 x 768] x [768 x 3072],
# fp16): 128x256x32 with 8 warps and 4 stages took 104 us, the best of nine configurations
# (128x128: 119-155 us, 256x128: 112-114 us), against 101 us for cuBLAS + torch's GELU. That
# layer therefore keeps cuBLAS; these tiles win where cuBLAS has no fused form of the epilogue
# and the extra pass costs more than the GEMM gap.
TILES = {
    "128x256": (128, 256, 32, 8, 4),
    "64x128": (64, 128, 64, 4, 4),
}
_GROUP_M = 8


def _supports(node: Node) -> Optional[str]:
    reason = triton_missing() or dtype_reason(node, HALF_FLOATS)
    if reason:
        return reason
    attrs = node.attrs
    activation = attrs.get("activation", "")
    if activation not in ACTIVATIONS:
        return f"activation {activation} (the kernel has {', '.join(a for a in ACTIVATIONS if a)})"
    if not activation and optional_input(node.inputs, 3) is None:
        return "no epilogue beyond the bias: cuBLASLt's bias epilogue does the same in one kernel"
    if attrs.get("transA"):
        return "transA"
    if float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
        return "alpha/beta other than 1"
    a, b = input_shape(node, 0), input_shape(node, 1)
    if a is None or b is None:
        return "operand ranks unknown before run time"
    if len(b) != 2:
        return f"a {len(b)}-D weight (the kernel takes a 2-D weight shared by every row)"
    bias = input_shape(node, 2)
    if bias is not None and any(d != 1 for d in bias[:-1]):
        return f"bias {list(bias)} is not a row bias"
    residual = input_shape(node, 3)
    if residual is not None and len(residual) != len(a):
        return f"residual {list(residual)} does not have the output's rank"
    return None


class TritonGemm:
    def __init__(self, tile: str) -> None:
        self.tile = TILES[tile]
        self.weights = DerivedTensors()
        self._kernel: Any = None

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        if self._kernel is None:
            from .gemm_kernels import gemm_epilogue_kernel
            self._kernel = gemm_epilogue_kernel
        a, b = inputs[0], inputs[1]
        bias, residual = optional_input(inputs, 2), optional_input(inputs, 3)
        b = as_dtype(self.weights, b, a.dtype)
        if attrs.get("transB"):
            b = b.t()
        k, n = b.shape
        lead = tuple(a.shape[:-1])
        flat = a.reshape(-1, k)
        m = flat.shape[0]
        out = torch.empty((m, n), dtype=a.dtype, device=a.device)
        if bias is not None:
            bias = as_dtype(self.weights, bias, a.dtype).reshape(-1)
            if bias.numel() != n:
                bias = self.weights.get(bias, ("row", n), lambda t: t.expand(n).contiguous())
        res2 = None
        if residual is not None:
            res2 = residual.to(a.dtype).expand(*lead, n).reshape(m, n)
        if m and n:
            bm, bn, bk, warps, stages = self.tile
            grid = (math.ceil(m / bm) * math.ceil(n / bn),)
            self._kernel[grid](
                flat, b, bias if bias is not None else out, res2 if res2 is not None else out, out, m, n, k, math.ceil(k / bk),
                flat.stride(0), flat.stride(1), b.stride(0), b.stride(1),
                res2.stride(0) if res2 is not None else 0, res2.stride(1) if res2 is not None else 0,
                out.stride(0), out.stride(1),
                HAS_BIAS=bias is not None, HAS_RES=res2 is not None,
                RES_AFTER=bool(attrs.get("residual_after_activation", 0)),
                ACT=ACTIVATIONS[attrs.get("activation", "")], EVEN_K=k % bk == 0,
                BM=bm, BN=bn, BK=bk, GROUP_M=_GROUP_M, num_warps=warps, num_stages=stages)
        return out.view(*lead, n)


def _register() -> None:
    for tile in TILES:
        gemm = TritonGemm(tile)
        register(f"triton_gemm_{tile}", "FusedMatMul", gemm.run, _supports, domain="tensorkiln", source="triton")


_register()

__all__ = ["ACTIVATIONS", "TILES", "TritonGemm"]
