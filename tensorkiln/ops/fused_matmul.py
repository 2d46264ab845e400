"""FusedMatMul (domain "tensorkiln"): a matrix product with its epilogue; one op for MatMul and Gemm.

    y = alpha * (A' @ B') + beta * bias      (A' = A^T over the last two dims if transA, B' likewise)
    y = act(y + R)                           (R: residual, optional; residual_after_activation=0)
    y = act(y) + R                           (residual_after_activation=1)

Batch dims broadcast as in MatMul; `bias` and `R` must broadcast into the product's shape without
growing it (the rewrite checks it). A Gemm keeps its transA/transB/alpha/beta here, a MatMul has the
defaults. The product comes from one BLAS call (addmm for 2-D operands and for N-D x 2-D with a
last-dim bias, which is the transformer case), and the epilogue runs in place on that fresh result.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..ir import Node, TensorType
from .fused_conv import DOMAIN, apply_epilogue, check_epilogue, normalize_epilogue
from .matmul import matmul_shape
from .registry import InferContext, Op, register


def _t(shape: Optional[tuple], trans: bool) -> Optional[tuple]:
    if shape is None or not trans:
        return shape
    return tuple(shape[:-2]) + (shape[-1], shape[-2])


def _is_row_bias(bias: torch.Tensor, n: int) -> bool:
    """Whether `bias` varies along the last dim only (shape [N], [1, N], [1, 1, N], or a scalar)."""
    return all(d == 1 for d in bias.shape[:-1]) and (bias.dim() == 0 or bias.shape[-1] in (1, n))


def fused_matmul(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor], attrs: dict[str, Any]
                 ) -> torch.Tensor:
    """alpha * (A' @ B') + beta * bias as a fresh tensor."""
    if attrs.get("transA"):
        a = a.transpose(-1, -2)
    if attrs.get("transB"):
        b = b.transpose(-1, -2)
    b = b.to(a.dtype)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if bias is not None and beta == 0.0:
        bias = None  # as Gemm: beta 0 ignores C
    if bias is not None:
        bias = bias.to(a.dtype)
    if a.dim() == 2 and b.dim() == 2:
        if bias is None:
            y = torch.mm(a, b)
            return y.mul_(alpha) if alpha != 1.0 else y
        return torch.addmm(bias, a, b, beta=beta, alpha=alpha)
    if a.dim() > 2 and b.dim() == 2 and (bias is None or _is_row_bias(bias, b.shape[1])):
        # [..., K] @ [K, N]: one [rows, K] @ [K, N] product (the weight is shared by every row).
        lead = a.shape[:-1]
        flat = a.reshape(-1, a.shape[-1])
        if bias is None:
            y = torch.mm(flat, b)
            if alpha != 1.0:
                y = y.mul_(alpha)
        else:
            y = torch.addmm(bias.reshape(-1), flat, b, beta=beta, alpha=alpha)
        return y.reshape(*lead, b.shape[1])
    y = torch.matmul(a, b)
    if alpha != 1.0:
        y = y.mul_(alpha)
    if bias is not None:
        y = y.add_(bias, alpha=beta)
    return y


@register
class FusedMatMul(Op):
    name = "FusedMatMul"
    domain = DOMAIN
    attrs = {"transA": 0, "transB": 0, "alpha": 1.0, "beta": 1.0, "activation": "", "activation_params": None,
             "residual_after_activation": 0}

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = normalize_epilogue(super().normalize(attrs, opset))
        out["transA"], out["transB"] = int(out["transA"]), int(out["transB"])
        out["alpha"], out["beta"] = float(out["alpha"]), float(out["beta"])
        return out

    def check(self, node: Node) -> Optional[str]:
        for i, flag in ((0, "transA"), (1, "transB")):
            rank = node.inputs[i].type.rank if isinstance(node.inputs[i].type, TensorType) else None
            if node.attrs.get(flag) and rank is not None and rank < 2:
                return f"{flag} needs an operand of rank >= 2, input {i} has rank {rank}"
        return check_epilogue(node)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        a, b = ctx.type(0), ctx.type(1)
        if a is None:
            return [None]
        if a.shape is None or b is None or b.shape is None:
            return [TensorType(a.dtype, None)]
        return [TensorType(a.dtype, matmul_shape(_t(a.shape, bool(ctx.attrs.get("transA"))),
                                                 _t(b.shape, bool(ctx.attrs.get("transB")))))]

    def reference(self, ctx, inputs, attrs):
        a, b = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        residual = inputs[3] if len(inputs) > 3 else None
        half = a.dtype in (torch.float16, torch.bfloat16) and a.device.type == "cpu"
        # Half epilogues on the CPU compute in float32 (as the activation ops do), once, on the product.
        y = fused_matmul(a, b, bias, attrs)
        if half and (attrs.get("activation") or residual is not None):
            return apply_epilogue(y.float(), residual, attrs).to(a.dtype)
        return apply_epilogue(y, residual, attrs)
