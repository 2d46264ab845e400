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
from ._common import (DerivedTensors, HALF_FLOATS, OutputFn, as_dtype, dtype_reason, first_output, input_shape,
                      multiprocessor_count, optional_input, register, triton_missing)

# Epilogue activation name -> the kernel's activation code (gemm_kernels: NONE, RELU, GELU, ...).
ACTIVATIONS = {"": 0, "Relu": 1, "Gelu": 2, "GeluTanh": 3, "Sigmoid": 4, "Tanh": 5, "Silu": 6}

# name -> (BM, BN, BK, warps, stages): a wide tile for many rows, a short one for few. Measured
# on an H200 for BERT-base's feed-forward GEMM + GELU at batch 64 ([8192 x 768] x [768 x 3072],
# fp16): 128x256x32 with 8 warps and 4 stages took 104 us, the best of nine configurations
# (128x128: 119-155 us, 256x128: 112-114 us), against 101 us for cuBLAS + torch's GELU. That
# layer therefore keeps cuBLAS; these tiles win where cuBLAS has no fused form of the epilogue
# and the extra pass costs more than the GEMM gap.
# The 16x32 tile is for a few rows (BERT's pooler: one row per sequence, tanh): 24 programs share a
# 768-wide weight where the 64x128 tile gives 6.
TILES = {
    "128x256": (128, 256, 32, 8, 4),
    "64x128": (64, 128, 64, 4, 4),
    "16x32": (16, 32, 128, 4, 3),
}
# The persistent TMA kernel's tiles (BM, BN, BK, warps, stages); the output is stored in two
# [BM, BN/2] halves. Measured on an H200 (fp16, bias + epilogue, nine tile configurations): at
# [8192 x 768] x [768 x 2304] with a residual this tile took 71 us against cuBLAS + add's 81 and
# the plain kernel's 76; with BERT's GELU ([768 x 3072]) it took 116 us against cuBLAS + GELU's 101
# (the best TMA tile there, 128x128, 104); at 128 rows every TMA tile lost to cuBLAS (8-33 us against
# 4-9). Triton 3.6 warp-specialises only on Blackwell: on Hopper these kernels reach 60-75% of
# cuBLAS's rate, so they win where the fused epilogue saves a pass over a large output.
TMA_TILES = {
    "128x256": (128, 256, 64, 8, 3),
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


class _Operands:
    """A FusedMatMul's operands in the forms the kernels take: A as [M, K] rows, the weight as [K, N]
    (a view), the bias as one value per output column, the residual as [M, N], and the output [M, N] (from
    `output`: the layer's output 0)."""

    def __init__(self, weights: DerivedTensors, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any],
                 output: OutputFn) -> None:
        a, b = inputs[0], inputs[1]
        bias, residual = optional_input(inputs, 2), optional_input(inputs, 3)
        b = as_dtype(weights, b, a.dtype)
        # The weight as stored ([K, N], or [N, K] with transB): the object derived forms are cached on.
        self.stored_weight, self.transposed = b, bool(attrs.get("transB"))
        self.weight = b.t() if self.transposed else b
        self.k, self.n = self.weight.shape
        self.lead = tuple(a.shape[:-1])
        self.a = a.reshape(-1, self.k)
        self.m = self.a.shape[0]
        self.out = output((self.m, self.n), a.dtype)
        if bias is not None:
            bias = as_dtype(weights, bias, a.dtype).reshape(-1)
            if bias.numel() != self.n:
                n = self.n
                bias = weights.get(bias, ("row", n), lambda t: t.expand(n).contiguous())
        self.bias = bias
        self.residual = None if residual is None else residual.to(a.dtype).expand(*self.lead, self.n).reshape(
            self.m, self.n)
        self.flags = dict(HAS_BIAS=bias is not None, HAS_RES=self.residual is not None,
                          RES_AFTER=bool(attrs.get("residual_after_activation", 0)),
                          ACT=ACTIVATIONS[attrs.get("activation", "")])

    def epilogue_args(self) -> tuple:
        """bias, residual (the output stands in for absent ones: never read) and the residual's strides."""
        res = self.residual
        return (self.bias if self.bias is not None else self.out, res if res is not None else self.out,
                res.stride(0) if res is not None else 0, res.stride(1) if res is not None else 0)

    def result(self) -> torch.Tensor:
        return self.out.view(*self.lead, self.n)


class TritonGemm:
    def __init__(self, tile: str) -> None:
        self.tile = TILES[tile]
        self.weights = DerivedTensors()
        self._kernel: Any = None

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        if self._kernel is None:
            from .gemm_kernels import gemm_epilogue_kernel
            self._kernel = gemm_epilogue_kernel
        ops = _Operands(self.weights, inputs, attrs, first_output(ctx))
        m, n, k, a, b = ops.m, ops.n, ops.k, ops.a, ops.weight
        if m and n:
            bm, bn, bk, warps, stages = self.tile
            bias, res, srm, srn = ops.epilogue_args()
            grid = (math.ceil(m / bm) * math.ceil(n / bn),)
            self._kernel[grid](a, b, bias, res, ops.out, m, n, k, math.ceil(k / bk),
                               a.stride(0), a.stride(1), b.stride(0), b.stride(1), srm, srn,
                               ops.out.stride(0), ops.out.stride(1), EVEN_K=k % bk == 0,
                               BM=bm, BN=bn, BK=bk, GROUP_M=_GROUP_M, num_warps=warps, num_stages=stages, **ops.flags)
        return ops.result()


def _tma_ready(t: torch.Tensor) -> torch.Tensor:
    """`t` (2-D) as TMA reads it: unit inner stride, 16-byte aligned base and row stride."""
    if t.stride(1) == 1 and t.stride(0) * t.element_size() % 16 == 0 and t.data_ptr() % 16 == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)


class TmaGemm:
    """The persistent Hopper (sm90+) form of the same GEMM and epilogue: operand tiles by TMA,
    one program per multiprocessor. The weight is kept as [N, K] (transposed once per weight),
    the K-major layout both wgmma operands read from shared memory without a transpose."""

    def __init__(self, tile: str) -> None:
        self.tile = TMA_TILES[tile]
        self.weights = DerivedTensors()
        self._kernel: Any = None
        self._descriptor: Any = None
        # Pipeline stages that fit shared memory, by epilogue variant (found at the first launch).
        self._stages: dict[tuple, int] = {}

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        if self._kernel is None:
            from triton.tools.tensor_descriptor import TensorDescriptor

            from .gemm_kernels import gemm_tma_kernel
            self._kernel, self._descriptor = gemm_tma_kernel, TensorDescriptor
        ops = _Operands(self.weights, inputs, attrs, first_output(ctx))
        m, n, k = ops.m, ops.n, ops.k
        if not (m and n):
            return ops.result()
        if ops.out.data_ptr() % 16:
            # TMA stores need a 16-byte aligned base, which the arena's places lack only in caller-given memory
            # at such an address: this call then takes a tensor of its own.
            ops.out = torch.empty_like(ops.out)
        bm, bn, bk, warps, stages = self.tile
        a = _tma_ready(ops.a)
        stored = ops.stored_weight
        b_nk = _tma_ready(stored) if ops.transposed else self.weights.get(stored, "n_by_k", lambda w: w.t().contiguous())
        desc = self._descriptor
        a_desc = desc(a, [m, k], list(a.stride()), [bm, bk])
        b_desc = desc(b_nk, [n, k], list(b_nk.stride()), [bn, bk])
        c_desc = desc(ops.out, [m, n], list(ops.out.stride()), [bm, bn // 2])
        bias, res, srm, srn = ops.epilogue_args()
        programs = min(multiprocessor_count(a.device), math.ceil(m / bm) * math.ceil(n / bn))
        variant = tuple(sorted(ops.flags.items()))
        stages = self._stages.get(variant, stages)
        while True:
            try:
                self._kernel[(programs,)](a_desc, b_desc, c_desc, bias, res, m, n, k, srm, srn,
                                          BM=bm, BN=bn, BK=bk, GROUP_M=_GROUP_M, PROGRAMS=programs,
                                          num_warps=warps, num_stages=stages, **ops.flags)
                break
            except Exception as exc:  # noqa: BLE001 - triton's OutOfResources, matched by name (no import on CPU)
                # An epilogue that reads a residual stages it through shared memory, which can push the
                # operand pipeline past the limit; one stage fewer fits (the compile fails before launch).
                if type(exc).__name__ != "OutOfResources" or stages <= 2:
                    raise
                stages -= 1
        self._stages[variant] = stages
        return ops.result()


def _tma_supports(node: Node) -> Optional[str]:
    reason = _supports(node)
    if reason:
        return reason
    if torch.cuda.is_available() and torch.cuda.get_device_capability() < (9, 0):
        return "TMA needs a Hopper (sm90) or newer GPU"
    b = input_shape(node, 1)
    k, n = (b[1], b[0]) if node.attrs.get("transB") else (b[0], b[1])
    if not isinstance(k, int) or not isinstance(n, int):
        return "weight dims unknown before run time"
    if k % 8 or n % 8:
        return f"K={k}, N={n}: TMA rows must be 16-byte multiples (K and N multiples of 8)"
    return None


def _register() -> None:
    for tile in TILES:
        gemm = TritonGemm(tile)
        register(f"triton_gemm_{tile}", "FusedMatMul", gemm.run, _supports, domain="tensorkiln", source="triton",
                 arena_outputs=True)
    for tile in TMA_TILES:
        tma = TmaGemm(tile)
        register(f"triton_tma_{tile}", "FusedMatMul", tma.run, _tma_supports, domain="tensorkiln", source="triton",
                 arena_outputs=True)


_register()

__all__ = ["ACTIVATIONS", "TILES", "TMA_TILES", "TmaGemm", "TritonGemm"]
