"""cuBLASLt algorithm tactics for MatMul and tensorkiln::FusedMatMul: "cublaslt_r<i>" and "cublaslt_nt_r<i>".

torch runs each GEMM with the algorithm cuBLASLt's heuristic ranks first. That choice is a
model's guess; TensorRT asks the heuristic for several algorithms and times them. Here the
i-th ranked algorithm is tactic "cublaslt_r<i>": ranks 0-7 are the heuristic's list when it may
plan up to 32 MiB of workspace, the ranks after them its list when it may plan none (no split-K,
so no separate reduction kernel; no tile-scheduler counter, so no memset before the kernel: the
same algorithm without workspace is a candidate of its own, cublaslt_api.Plan says why). On
BERT-base at batch 64 the engine with the no-workspace forms ran 2.3% faster than with the same
algorithms given workspace (24 memset nodes fewer in its CUDA graph). The tuner times them all
against cuBLAS and the Triton kernels and the engine records the winner per layer. On an H200 (fp16,
BERT-base's GEMMs, timed in CUDA graphs) the best of them beat torch's call by 10% at
[8192 x 768] x [768 x 2304] (tile 128x128, ranked 7th) and by 8% on the feed-forward GEMM with
its GELU; at 128 rows by up to 13%.

"_nt" tactics keep a constant weight [K, N] as its transpose [N, K] (made once), which cuBLAS
reads as op T: torch.nn.Linear's layout; the ranking differs between the layouts.

What runs in the epilogue: the bias, Relu or the tanh-form GELU (and, for fp16/bf16 layers, an
erf GELU computed in the tanh form, as "cublaslt_gelu_tanh" explains), and a residual added
before the activation (cuBLASLt's C operand with beta 1). Split-K algorithms sum their partials
in fp32 (the heuristic is told to offer no others) in a workspace from torch's caching
allocator. The rank is of the heuristic's list for the shape being run: at the shape the layer
was tuned at that is the algorithm that was timed. A shape for which cuBLASLt offers fewer
algorithms uses its last one; one with none (or a layout cuBLASLt does not take) goes through
torch's call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ...ir import Node
from ._common import (DerivedTensors, HALF_FLOATS, OutputFn, as_dtype, dtype_reason, fresh_output, input_dtype,
                      input_shape, optional_input, register, tf32_allowed)
from .cublaslt_api import (COMPUTE_32F, COMPUTE_32F_FAST_TF32, CublasLtError, EPILOGUE_BIAS_FLAG, EPILOGUE_DEFAULT,
                           EPILOGUE_GELU, EPILOGUE_RELU, MAX_ALGORITHMS, Plan, Problem, alignment_of)
from .gemm import Cublas

# FusedMatMul activation -> cuBLASLt epilogue flag; the bias adds its own flag (bias + GELU = 36), and
# DEFAULT (1) is the value for neither. "Gelu" (erf) only for fp16/bf16 layers: the tanh form differs
# by at most gemm.TANH_GELU_MAX_DEVIATION, below half precision's rounding.
_EPILOGUES = {"": 0, "Relu": EPILOGUE_RELU, "GeluTanh": EPILOGUE_GELU, "Gelu": EPILOGUE_GELU}

_plans: dict[Problem, Plan] = {}
# Weights converted or transposed for cuBLASLt, and torch's call for what cuBLASLt does not take here:
# shared by every rank, so the tuner's 32 candidates hold one transposed copy of a weight, not 16.
_WEIGHTS = DerivedTensors()
_FALLBACK = Cublas()
_plans_lock = threading.Lock()


def _plan(problem: Problem, bias: Optional[torch.Tensor]) -> Plan:
    """The descriptors and ranked algorithms of a problem (one heuristic call per problem per process)."""
    with _plans_lock:
        plan = _plans.get(problem)
    if plan is None:
        plan = Plan(problem, bias)
        with _plans_lock:
            plan = _plans.setdefault(problem, plan)
    return plan


def _supports(node: Node, transposed: bool) -> Optional[str]:
    reason = dtype_reason(node)
    if reason:
        return reason
    a, b = input_shape(node, 0), input_shape(node, 1)
    if a is not None and len(a) < 2:
        return "1-D activations (the reference does numpy's promotion)"
    if b is None or len(b) != 2:
        return "the weight is not 2-D"
    attrs = node.attrs
    if attrs.get("transA"):
        return "transA: a transposed activation"
    if transposed:
        if node.inputs[1].const is None:
            return "the weight is not a constant (it would be transposed on every call)"
        if attrs.get("transB"):
            return "transB: the weight is already stored transposed (the plain tactics read it as op T)"
    if node.op_type == "MatMul":
        return None
    activation = attrs.get("activation", "")
    if activation not in _EPILOGUES:
        return f"activation {activation} (cuBLASLt's epilogue has Relu and GELU)"
    if activation == "Gelu" and dtype_reason(node, HALF_FLOATS):
        return "erf GELU in an fp32 layer (the tanh-form epilogue is within half precision's rounding only)"
    bias = input_shape(node, 2)
    if bias is not None:
        if any(d != 1 for d in bias[:-1]):
            return "the bias varies along more than the last dim (cuBLASLt adds one row)"
        if float(attrs.get("beta", 1.0)) != 1.0:
            return "beta other than 1 (cuBLASLt adds the bias unscaled)"
    if optional_input(node.inputs, 3) is not None:
        if activation and attrs.get("residual_after_activation"):
            return "a residual added after the activation (cuBLASLt adds C before it)"
        if input_dtype(node, 3) not in (None, input_dtype(node, 0)):
            return "a residual of another dtype"
    return None


_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _leading_dim(t: torch.Tensor) -> int:
    """The row stride cuBLAS sees (a single row's stride is meaningless to torch and may be anything)."""
    return t.stride(0) if t.shape[0] > 1 else t.shape[1]


def _row_major(t: torch.Tensor) -> bool:
    """Whether a 2-D tensor's rows are contiguous and do not overlap, so cuBLAS reads it in place."""
    return (t.stride(1) == 1 or t.shape[1] == 1) and _leading_dim(t) >= t.shape[1]


@dataclass
class _Call:
    plan: Plan
    rank: int
    out: torch.Tensor
    x: torch.Tensor
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    residual: Optional[torch.Tensor]
    shape: tuple[int, ...]


class CublasLtAlgorithm:
    """The algorithm of one heuristic rank, with the weight as given or kept transposed."""

    def __init__(self, rank: int, transposed: bool) -> None:
        self.rank = rank
        self.transposed = transposed

    def supports(self, node: Node) -> Optional[str]:
        return _supports(node, self.transposed)

    def run_matmul(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        out = _OutputOnce(ctx)
        y = self.product(inputs[0], inputs[1], False, None, None, "", 1.0, out)
        return y if y is not None else _FALLBACK.matmul(inputs, out)

    def run_fused(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        out = _OutputOnce(ctx)
        y = self.product(inputs[0], inputs[1], bool(attrs.get("transB")), optional_input(inputs, 2),
                         optional_input(inputs, 3), attrs.get("activation", ""), float(attrs.get("alpha", 1.0)), out)
        return y if y is not None else _FALLBACK.fused(inputs, attrs, out)

    def workspace(self, node: Node, inputs: list[Any]) -> int:
        """Bytes of workspace the rank's algorithm needs for these inputs (--memPoolSize=workspace:N)."""
        attrs = node.attrs
        try:
            call = self._prepare(inputs[0], inputs[1], bool(attrs.get("transB")), optional_input(inputs, 2),
                                 optional_input(inputs, 3), attrs.get("activation", ""), float(attrs.get("alpha", 1.0)))
        except CublasLtError:
            return 0  # the run fails the same way and the tuner leaves the tactic out with that reason
        return call.plan.algorithms[call.rank].workspace_size if call is not None else 0

    def product(self, a: torch.Tensor, w: torch.Tensor, trans_b: bool, bias: Optional[torch.Tensor],
                residual: Optional[torch.Tensor], activation: str, alpha: float,
                out: Optional[OutputFn] = None) -> Optional[torch.Tensor]:
        """epilogue(alpha * a @ w' + bias (+ residual)) through cuBLASLt into a tensor from `out` (a new one
        without), or None where it does not apply."""
        call = self._prepare(a, w, trans_b, bias, residual, activation, alpha, out)
        if call is None:
            return None
        call.plan.run(call.rank, call.out, call.x, call.weight, call.bias, call.residual, alpha)
        return call.out.view(call.shape)

    def _weight(self, w: torch.Tensor, trans_b: bool) -> tuple[torch.Tensor, bool]:
        """The weight as cuBLASLt reads it (rows contiguous) and whether it is stored [N, K]."""
        if self.transposed:
            return _WEIGHTS.get(w, ("transposed",), lambda t: t.t().contiguous()), True
        if not _row_major(w):
            w = _WEIGHTS.get(w, ("contiguous",), lambda t: t.contiguous())
        return w, trans_b

    def _prepare(self, a: torch.Tensor, w: torch.Tensor, trans_b: bool, bias: Optional[torch.Tensor],
                 residual: Optional[torch.Tensor], activation: str, alpha: float,
                 out_fn: Optional[OutputFn] = None) -> Optional[_Call]:
        if not (isinstance(a, torch.Tensor) and a.is_cuda and a.dtype in _DTYPES and w.dim() == 2):
            return None
        w = as_dtype(_WEIGHTS, w, a.dtype)
        weight, stored_nk = self._weight(w, trans_b)
        n, k = (weight.shape[0], weight.shape[1]) if stored_nk else (weight.shape[1], weight.shape[0])
        if a.shape[-1] != k:
            return None  # torch's call names the mismatch
        lead = tuple(a.shape[:-1])
        x = a.reshape(-1, k)
        if not _row_major(x):
            x = x.contiguous()
        m = x.shape[0]
        if m == 0 or n == 0 or k == 0:
            return None
        if bias is not None:
            bias = as_dtype(_WEIGHTS, bias, a.dtype)
            if bias.numel() != n:  # one value for every column: widened once (keyed by the bias itself)
                bias = _WEIGHTS.get(bias, ("row", n), lambda t: t.reshape(-1).expand(n).contiguous())
            else:
                bias = bias.reshape(-1)
                if bias.stride(0) != 1:
                    bias = bias.contiguous()
        if residual is not None:
            if tuple(residual.shape) != lead + (n,):
                return None
            residual = residual.to(a.dtype).reshape(m, n)
            if not residual.is_contiguous():
                residual = residual.contiguous()
        # Taken before the plan: the heuristic is asked for algorithms that suit its address's alignment.
        out = (out_fn or fresh_output(a.device))((m, n), a.dtype)
        epilogue = (_EPILOGUES[activation] | (EPILOGUE_BIAS_FLAG if bias is not None else 0)) or EPILOGUE_DEFAULT
        compute = COMPUTE_32F_FAST_TF32 if a.dtype == torch.float32 and tf32_allowed() else COMPUTE_32F
        device_index = a.device.index if a.device.index is not None else torch.cuda.current_device()
        problem = Problem(m, n, k, a.dtype, stored_nk, _leading_dim(weight), _leading_dim(x), epilogue,
                          residual is not None, compute, alignment_of(x, weight, bias, residual, out), device_index)
        plan = _plan(problem, bias)
        if not plan.algorithms:
            return None
        return _Call(plan, min(self.rank, len(plan.algorithms) - 1), out, x, weight, bias, residual, lead + (n,))


class _OutputOnce:
    """Output 0 from `ctx`, asked of it once per call: where cuBLASLt has no algorithm for the problem after
    all (found once the output's address is known), torch's call writes into the tensor already taken."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.taken: Optional[torch.Tensor] = None

    def __call__(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        taken = self.taken
        if taken is None:
            self.taken = self.ctx.output(0, shape, dtype)
            return self.taken
        if tuple(taken.shape) == tuple(shape) and taken.dtype == dtype:
            return taken
        return torch.empty(tuple(shape), dtype=dtype, device=taken.device)


def _register() -> None:
    for transposed in (False, True):
        for rank in range(MAX_ALGORITHMS):
            impl = CublasLtAlgorithm(rank, transposed)
            name = f"cublaslt_{'nt_' if transposed else ''}r{rank}"
            register(name, "MatMul", impl.run_matmul, impl.supports, source="cublaslt", workspace_bytes=impl.workspace,
                     arena_outputs=True)
            register(name, "FusedMatMul", impl.run_fused, impl.supports, domain="tensorkiln", source="cublaslt",
                     workspace_bytes=impl.workspace, arena_outputs=True)


_register()

__all__ = ["CublasLtAlgorithm"]
