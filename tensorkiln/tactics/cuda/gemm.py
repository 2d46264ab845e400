"""cuBLAS tactics for MatMul, Gemm and tensorkiln::FusedMatMul ("cublas", "cublas_nt").

What they do beyond the references:
- Gemm and FusedMatMul: alpha, beta and the bias go into one addmm call (cuBLASLt adds a
  1-D bias in its epilogue) instead of a product followed by separate scale and add passes.
- FusedMatMul with Relu or GeluTanh and a 1-D bias: bias and activation both run in the
  cuBLASLt epilogue (torch._addmm_activation); other activations run in place on the
  fresh product.
- The product goes straight into the layer's output (RunContext.output: its place in the
  activation arena) through the out= forms of mm, addmm, bmm and baddbmm. An activation
  that returns a new tensor (Gelu, Softplus, ...) makes that its output instead.
- N-D x 2-D products (the transformer case) are one [rows, K] x [K, N] GEMM; N-D x N-D with
  equal batch dims one batched GEMM (baddbmm when there is a bias).
- Weights and biases of another dtype are converted once and cached, not on every call.
- "cublaslt_gelu_tanh" (fp16/bf16 layers only): an erf GELU computed by cuBLASLt's tanh-form GELU
  epilogue; see CublasTanhGelu for why that is within half precision's accuracy.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ...ir import Node
from ...ops.fused_conv import NEW_TENSOR_ACTIVATIONS, apply_epilogue
from ._common import (DerivedTensors, HALF_FLOATS, OutputFn, as_dtype, dtype_reason, first_output, fresh_output,
                      input_dtype, input_shape, optional_input, register)

# Activations cuBLASLt's epilogue computes (with the bias) -> use_gelu of torch._addmm_activation.
_LT_EPILOGUE = {"Relu": False, "GeluTanh": True}


def _rank_reason(node: Node) -> Optional[str]:
    a, b = input_shape(node, 0), input_shape(node, 1)
    if a is not None and len(a) < 2 or b is not None and len(b) < 2:
        return "1-D operand (the reference does numpy's promotion)"
    return None


def _row_bias(bias: torch.Tensor, n: int) -> bool:
    """Whether `bias` varies along the last dim only: addmm broadcasts it over the rows."""
    return all(d == 1 for d in bias.shape[:-1]) and (bias.dim() == 0 or bias.shape[-1] in (1, n))


class Cublas:
    def __init__(self) -> None:
        self.weights = DerivedTensors()
        self.has_addmm_activation = hasattr(torch, "_addmm_activation")

    def supports(self, node: Node) -> Optional[str]:
        return dtype_reason(node) or _rank_reason(node)

    def supports_matmul(self, node: Node) -> Optional[str]:
        reason = self.supports(node)
        if reason:
            return reason
        if input_dtype(node, 1) == input_dtype(node, 0):
            # Measured: identical calls time within noise of each other, so tuning both buys nothing.
            return "operands of one dtype: the reference's torch.matmul makes the same cuBLAS call"
        return None

    def supports_fused(self, node: Node) -> Optional[str]:
        reason = self.supports(node)
        if reason:
            return reason
        a, b = input_shape(node, 0), input_shape(node, 1)
        bias = input_shape(node, 2)
        attrs = node.attrs
        lt_epilogue = (attrs.get("activation", "") in _LT_EPILOGUE and bias is not None and b is not None
                       and len(b) == 2 and all(d == 1 for d in bias[:-1]) and float(attrs.get("alpha", 1.0)) == 1.0
                       and float(attrs.get("beta", 1.0)) == 1.0
                       and (optional_input(node.inputs, 3) is None or attrs.get("residual_after_activation")))
        batched_bias = bias is not None and a is not None and b is not None and len(a) == 3 and len(b) == 3
        converts = any(input_dtype(node, i) not in (None, input_dtype(node, 0)) for i in (1, 2))
        if not (lt_epilogue or batched_bias or converts):
            return ("the reference makes the same cuBLAS call (addmm with the bias, then the epilogue in place); "
                    "this tactic adds the cuBLASLt Relu/GeluTanh epilogue, baddbmm and cached weight conversions")
        return None

    def lt_epilogue(self, a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor], alpha: float,
                    beta: float, activation: str) -> bool:
        """Whether `product` runs `activation` in cuBLASLt's epilogue, with the bias (one value per column)."""
        # On the CPU torch's _addmm_activation computes erf GELU; cuBLASLt's epilogue is the tanh form.
        return (activation in _LT_EPILOGUE and self.has_addmm_activation and a.is_cuda and bias is not None
                and b.dim() == 2 and _row_bias(bias, b.shape[-1]) and bias.numel() == b.shape[-1]
                and alpha == 1.0 and beta == 1.0)

    def product(self, a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor], alpha: float, beta: float,
                activation: str, out: OutputFn) -> tuple[torch.Tensor, bool]:
        """alpha * a @ b + beta * bias, written into a tensor from `out` (or, on the rare torch.matmul path, a
        fresh one), and whether `activation` was applied too."""
        if bias is not None and beta == 0.0:
            bias = None  # as Gemm: beta 0 ignores C
        lt = self.lt_epilogue(a, b, bias, alpha, beta, activation)
        b = as_dtype(self.weights, b, a.dtype)
        bias = as_dtype(self.weights, bias, a.dtype)
        n = b.shape[-1]
        if b.dim() == 2 and (bias is None or _row_bias(bias, n)):
            lead = a.shape[:-1]
            flat = a.reshape(-1, a.shape[-1])
            # mm/addmm/_addmm_activation write a contiguous `out` of the product's shape and dtype in place.
            y = out((flat.shape[0], n), a.dtype)
            if bias is None:
                torch.mm(flat, b, out=y)
                if alpha != 1.0:
                    y.mul_(alpha)
                return y.view(*lead, n), False
            row = bias.reshape(-1)
            if lt:
                torch._addmm_activation(row, flat, b, use_gelu=_LT_EPILOGUE[activation], out=y)
                return y.view(*lead, n), True
            torch.addmm(row, flat, b, beta=beta, alpha=alpha, out=y)
            return y.view(*lead, n), False
        if a.dim() == 3 and b.dim() == 3 and a.shape[0] == b.shape[0]:
            out_shape = (a.shape[0], a.shape[1], n)
            if bias is not None:
                if bias.dim() <= 3 and tuple(torch.broadcast_shapes(bias.shape, out_shape)) == out_shape:
                    return torch.baddbmm(bias, a, b, beta=beta, alpha=alpha, out=out(out_shape, a.dtype)), False
            else:
                y = torch.bmm(a, b, out=out(out_shape, a.dtype))
                return (y.mul_(alpha) if alpha != 1.0 else y), False
        # Batch dims that broadcast, 4-D+ products, a bias that is not a row (rare for these tactics, whose
        # supports() mostly take 2-D weights): torch.matmul's out= may copy, so its own result is the output.
        y = torch.matmul(a, b)
        if alpha != 1.0:
            y.mul_(alpha)
        if bias is not None:
            y = y.add_(bias, alpha=beta) if tuple(torch.broadcast_shapes(bias.shape, y.shape)) == tuple(y.shape) \
                else y + beta * bias
        return y, False

    def run_matmul(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        return self.matmul(inputs, first_output(ctx))

    def matmul(self, inputs: list[Optional[torch.Tensor]], out: OutputFn) -> torch.Tensor:
        return self.product(inputs[0], inputs[1], None, 1.0, 1.0, "", out)[0]

    def run_gemm(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        a, b = inputs[0], inputs[1]
        if attrs.get("transA"):
            a = a.transpose(0, 1)
        if attrs.get("transB"):
            b = b.transpose(0, 1)
        c = optional_input(inputs, 2)
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if c is not None and beta != 0.0 and not _row_bias(c, b.shape[1]):
            # A [M, N] or [M, 1] C: addmm broadcasts any C into the product's shape.
            return torch.addmm(as_dtype(self.weights, c, a.dtype), a, as_dtype(self.weights, b, a.dtype),
                               beta=beta, alpha=alpha, out=ctx.output(0, (a.shape[0], b.shape[1]), a.dtype))
        return self.product(a, b, c, alpha, beta, "", first_output(ctx))[0]

    def run_fused(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        return self.fused(inputs, attrs, first_output(ctx))

    def fused(self, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any], out: OutputFn) -> torch.Tensor:
        a, b = inputs[0], inputs[1]
        if attrs.get("transA"):
            a = a.transpose(-1, -2)
        if attrs.get("transB"):
            b = b.transpose(-1, -2)
        bias = optional_input(inputs, 2)
        residual = optional_input(inputs, 3)
        activation = attrs.get("activation", "")
        after = bool(attrs.get("residual_after_activation", 0))
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        # The Lt epilogue computes act(a @ b + bias): a residual must come after the activation.
        lt_activation = activation if residual is None or after else ""
        if activation in NEW_TENSOR_ACTIVATIONS and not self.lt_epilogue(a, b, bias, alpha, beta, lt_activation):
            # The activation returns a new tensor (Gelu, Softplus, ...): that is the layer's output, and the
            # product a temporary, which must not take the output's place.
            out = fresh_output(a.device)
        y, activated = self.product(a, b, bias, alpha, beta, lt_activation, out)
        if activated:
            return y if residual is None else y.add_(residual.to(y.dtype))
        return apply_epilogue(y, residual, attrs)


class CublasTransposedWeight(Cublas):
    """"cublas_nt": a constant 2-D weight [K, N] kept as its transpose ([N, K] contiguous, made once)
    and read through a transposed view, so cuBLAS runs its TN kernels: the layout of torch's
    nn.Linear weights. On an H200 BERT-base's batch-64 GEMMs ran 4-7% faster that way than in
    the NN layout of an exported MatMul's weight; at batch 1 the NN kernels were as fast or
    faster, so both are candidates and the tuner picks per layer."""

    def supports_weight(self, node: Node) -> Optional[str]:
        reason = self.supports(node)
        if reason:
            return reason
        weight = node.inputs[1]
        if weight.const is None:
            return "the weight is not a constant (it would be transposed on every call)"
        if weight.shape is None or len(weight.shape) != 2:
            return "the weight is not 2-D"
        if node.attrs.get("transB"):
            return "transB: the weight is already stored transposed"
        if node.attrs.get("transA"):
            return "transA: a transposed activation (the reference's layout choice stands)"
        return None

    def _transposed(self, b: torch.Tensor) -> torch.Tensor:
        return self.weights.get(b, ("transposed",), lambda w: w.t().contiguous().t())

    def run_matmul(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        return super().run_matmul(ctx, [inputs[0], self._transposed(inputs[1])], attrs)

    def run_gemm(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        return super().run_gemm(ctx, [inputs[0], self._transposed(inputs[1])] + list(inputs[2:]), attrs)

    def run_fused(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        return super().run_fused(ctx, [inputs[0], self._transposed(inputs[1])] + list(inputs[2:]), attrs)


# The largest |GELU_erf(x) - GELU_tanh(x)| over all x (at |x| = 2.70), in fp64.
TANH_GELU_MAX_DEVIATION = 4.8e-4


class CublasTanhGelu(CublasTransposedWeight):
    """"cublaslt_gelu_tanh": FusedMatMul + bias + erf GELU (BERT's feed-forward layer) as one cuBLASLt
    call with the tanh-form GELU epilogue; cuBLASLt has no erf form, and the separate GELU pass
    over the [tokens, 4 * hidden] product costs as much as a third of the GEMM (BERT-base, batch
    64, H200: 71 us GEMM + 30 us GELU).

    The two forms differ by at most 4.8e-4 (absolute, at |x| = 2.7; relative to the value it is
    largest for x < -2, where GELU is near 0). That is half an fp16 step at 1 and below the
    rounding the fp16 product already carries into the GELU (half a step of an fp16 number near
    2.7 is 9.8e-4, and GELU's slope there is 1.03), so the tactic is offered only for fp16 and bf16
    layers; fp32/TF32 layers keep the exact form. The tuner still checks it against the reference
    at the layer's tolerance like every candidate. `--tacticSources=-CUBLAS_LT` leaves it out, and
    a layer pinned to fp32 (`--layerPrecisions`) never sees it."""

    def supports_tanh_gelu(self, node: Node) -> Optional[str]:
        attrs = node.attrs
        if attrs.get("activation", "") != "Gelu":
            return "no erf GELU epilogue (Relu and GeluTanh already run in cuBLASLt's epilogue in 'cublas')"
        reason = dtype_reason(node, HALF_FLOATS)
        if reason:
            return reason + ": outside half precision the tanh form's deviation is not below the rounding"
        reason = self.supports_weight(node)
        if reason:
            return reason
        bias = input_shape(node, 2)
        if bias is None or any(d != 1 for d in bias[:-1]):
            return "no row bias (cuBLASLt's GELU epilogue comes with its bias)"
        if float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
            return "alpha/beta other than 1"
        if optional_input(node.inputs, 3) is not None and not attrs.get("residual_after_activation"):
            return "a residual added before the activation"
        if not self.has_addmm_activation:
            return "this torch has no _addmm_activation"
        return None

    def run_fused(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        return super().run_fused(ctx, inputs, dict(attrs, activation="GeluTanh"))


def _register() -> None:
    cublas = Cublas()
    register("cublas", "MatMul", cublas.run_matmul, cublas.supports_matmul, source="cublas", arena_outputs=True)
    register("cublas", "Gemm", cublas.run_gemm, cublas.supports, source="cublas", arena_outputs=True)
    register("cublas", "FusedMatMul", cublas.run_fused, cublas.supports_fused, domain="tensorkiln", source="cublas",
             arena_outputs=True)
    nt = CublasTransposedWeight()
    register("cublas_nt", "MatMul", nt.run_matmul, nt.supports_weight, source="cublas", arena_outputs=True)
    register("cublas_nt", "Gemm", nt.run_gemm, nt.supports_weight, source="cublas", arena_outputs=True)
    register("cublas_nt", "FusedMatMul", nt.run_fused, nt.supports_weight, domain="tensorkiln", source="cublas",
             arena_outputs=True)
    tanh_gelu = CublasTanhGelu()
    register("cublaslt_gelu_tanh", "FusedMatMul", tanh_gelu.run_fused, tanh_gelu.supports_tanh_gelu,
             domain="tensorkiln", source="cublaslt", arena_outputs=True)


_register()

__all__ = ["Cublas", "CublasTanhGelu", "CublasTransposedWeight", "TANH_GELU_MAX_DEVIATION"]
