"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (opset 12, 13).

Input [N, C, d1, ..., dk] of log-probabilities (NLL) or scores (SCE, which applies
log_softmax over axis 1 first), target [N, d1, ..., dk] of class indices, optional
weight [C]. A target equal to `ignore_index` contributes nothing, neither to the sum
nor to the weight total that "mean" divides by. Half-precision inputs are reduced in
float32 and cast back.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, Node, TensorType
from .registry import InferContext, Op, register

_REDUCTIONS = ("none", "sum", "mean")
_FLOATS = {DType.FLOAT32, DType.FLOAT16, DType.FLOAT64, DType.BFLOAT16}


def nll_loss(log_prob: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor], reduction: str,
             ignore_index: Optional[int]) -> torch.Tensor:
    """The ONNX NLL loss of float32/float64 log-probabilities (no dtype handling)."""
    target = target.long()
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    safe_target = torch.where(keep, target, torch.zeros_like(target))
    picked = -torch.gather(log_prob, 1, safe_target.unsqueeze(1)).squeeze(1)
    if weight is not None:
        per_item_weight = weight.to(log_prob.dtype)[safe_target] * keep
    else:
        per_item_weight = keep.to(log_prob.dtype)
    loss = picked * per_item_weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / per_item_weight.sum()


class _LossOp(Op):
    attrs = {"ignore_index": None, "reduction": "mean"}
    since_opset = 12

    def check(self, node: Node) -> Optional[str]:
        if node.attrs["reduction"] not in _REDUCTIONS:
            return f"reduction '{node.attrs['reduction']}' is not one of {', '.join(_REDUCTIONS)}"
        x = node.inputs[0]
        if x is not None and x.dtype is not None and x.dtype not in _FLOATS:
            return f"input dtype {x.dtype.short} is not a float type"
        if x is not None and x.shape is not None and len(x.shape) < 2:
            return f"input must have rank >= 2 [N, C, ...], got rank {len(x.shape)}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        x = ctx.type(0)
        if x is None:
            return [None] * ctx.num_outputs
        loss_shape = ctx.shape(1) if ctx.attrs["reduction"] == "none" else ()
        return [TensorType(x.dtype, loss_shape)] + [x] * (ctx.num_outputs - 1)

    @staticmethod
    def _compute_dtype(x: torch.Tensor) -> torch.dtype:
        return torch.float64 if x.dtype == torch.float64 else torch.float32


@register
class NegativeLogLikelihoodLoss(_LossOp):
    name = "NegativeLogLikelihoodLoss"

    def reference(self, ctx, inputs, attrs):
        x, target = inputs[0], inputs[1]
        weight = inputs[2] if len(inputs) > 2 else None
        loss = nll_loss(x.to(self._compute_dtype(x)), target, weight, attrs["reduction"], attrs["ignore_index"])
        return loss.to(x.dtype)


@register
class SoftmaxCrossEntropyLoss(_LossOp):
    name = "SoftmaxCrossEntropyLoss"

    def reference(self, ctx, inputs, attrs):
        scores, labels = inputs[0], inputs[1]
        weight = inputs[2] if len(inputs) > 2 else None
        log_prob = torch.log_softmax(scores.to(self._compute_dtype(scores)), dim=1)
        loss = nll_loss(log_prob, labels, weight, attrs["reduction"], attrs["ignore_index"])
        return [loss.to(scores.dtype), log_prob.to(scores.dtype)]
