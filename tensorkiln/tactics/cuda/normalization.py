"""LayerNormalization and Softmax tactics: "torch_fused", torch's one-kernel CUDA implementations.

The references compose several kernels (LayerNorm: mean, subtract, square, mean, rsqrt,
multiply, add, casts; half Softmax: an fp32 softmax then a cast). These read the input once
and write the output once, accumulating in fp32 for fp16/bf16 inputs.

Row-per-program Triton kernels for both were written and measured against these on an H200
(BERT-base shapes, fp16, bench/tactic_check.py): LayerNorm over 768 took 25.3 us (batch 1)
and 25.8 us (batch 64) against torch_fused's 16.5 and 19.2 us; Softmax over 128 took 13.9
and 62.4 us against 5.6 and 25.6 us. torch's kernels were faster in every case, so they are
the tactics and the Triton ones were dropped. Those timings were eager, so they included
Triton's ~20 us Python launch, which an engine replaying its CUDA graph never pays (the tuner
now times in graphs); the fused residual-add + LayerNorm kernel (skip_layer_norm.py) takes
9.9 us per call at batch 64 that way, against 8.4 + 21 us for torch's add and layer norm.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ...ir import DType, Node
from ...ops.registry import normalize_axis
from ...ops.softmax import apply_along_axis
from ._common import DerivedTensors, dtype_reason, input_shape, optional_input, register


def _layer_norm_reason(node: Node) -> Optional[str]:
    reason = dtype_reason(node)
    if reason:
        return reason
    if int(node.attrs.get("stash_type", 1)) != DType.FLOAT32.value:
        return f"stash_type {node.attrs.get('stash_type')} (torch's kernel keeps statistics in float32)"
    if input_shape(node, 0) is None:
        return "input rank unknown before run time"
    return None


class LayerNormFused:
    def __init__(self) -> None:
        self.weights = DerivedTensors()

    def _affine(self, t: Optional[torch.Tensor], normalized: tuple[int, ...], dtype: torch.dtype
                ) -> Optional[torch.Tensor]:
        """Scale or bias in `dtype`, broadcast to the normalized shape and contiguous (once per weight)."""
        if t is None or (t.dtype == dtype and tuple(t.shape) == normalized and t.is_contiguous()):
            return t
        return self.weights.get(t, ("affine", dtype, normalized),
                                lambda s: s.to(dtype).expand(normalized).contiguous())

    def supports(self, node: Node) -> Optional[str]:
        return _layer_norm_reason(node)

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> Any:
        x = inputs[0]
        axis = normalize_axis(int(attrs.get("axis", -1)), x.dim())
        normalized = tuple(x.shape[axis:])
        # torch's kernel wants weights of the input's dtype; it accumulates in fp32 all the same.
        w = self._affine(inputs[1], normalized, x.dtype)
        b = self._affine(optional_input(inputs, 2), normalized, x.dtype)
        y, mean, rstd = torch.native_layer_norm(x, normalized, w, b, float(attrs.get("epsilon", 1e-5)))
        stats = tuple(x.shape[:axis]) + (1,) * len(normalized)
        return [y, mean.to(torch.float32).reshape(stats), rstd.to(torch.float32).reshape(stats)]


class SoftmaxFused:
    def supports(self, node: Node) -> Optional[str]:
        reason = dtype_reason(node)
        if reason:
            return reason
        if node.inputs[0].dtype == DType.FLOAT32:
            return "for float32 the reference already is torch's one-kernel softmax"
        return None

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        # torch's half softmax accumulates in fp32 and rounds once, in one kernel: the reference's
        # fp32 softmax followed by a cast, without the fp32 intermediate.
        opset = 1 if attrs.get("_flatten") else 13
        return apply_along_axis(inputs[0], int(attrs["axis"]), opset, lambda t, dim: torch.softmax(t, dim))


def _register() -> None:
    ln = LayerNormFused()
    register("torch_fused", "LayerNormalization", ln.run, ln.supports, source="torch", fresh_outputs=True)
    sm = SoftmaxFused()
    register("torch_fused", "Softmax", sm.run, sm.supports, source="torch", fresh_outputs=True)


_register()

__all__ = ["LayerNormFused", "SoftmaxFused"]
