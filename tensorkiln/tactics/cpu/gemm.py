""""linear_nt": MatMul and tensorkiln::FusedMatMul on the CPU with the constant weight kept as its transpose.

torch's CPU GEMM has a fast fp16/bf16 kernel only for a weight whose K axis is contiguous
(torch.nn.Linear's [N, K] layout, read transposed); a [K, N] weight, as ONNX MatMul and Gemm
store it, takes a generic loop. Measured on 2 cores, [128 x 768] x [768 x 3072]: fp16 650 ms
against 30 ms, bf16 653 against 40; fp32 6-8 ms either way. BERT-base at batch 1 in fp16 took
24 s an inference with the [K, N] weights (torch eager, with nn.Linear's layout: 1.1 s).

The tactic makes the [N, K] copy once per weight (kept while the weight lives) and hands the
op's own reference a transposed view of it, so the product and every epilogue are the
reference's. The tuner times it against the reference like any candidate.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ...ir import HALF_FLOATS, Node
from ...ops import get_op
from ..derived import DerivedTensors
from ..registry import Tactic, register_tactic

def _supports(node: Node) -> Optional[str]:
    a = node.inputs[0]
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if a is None or a.dtype not in HALF_FLOATS:
        return "not an fp16/bf16 product (fp32 runs the same kernel with either weight layout)"
    if weight is None or weight.const is None:
        return "the weight is not a constant (it would be transposed on every call)"
    if weight.shape is None or len(weight.shape) != 2:
        return "the weight is not 2-D"
    if node.attrs.get("transB"):
        return "transB: the weight is already stored [N, K]"
    return None


class TransposedWeight:
    def __init__(self, op_type: str, domain: str) -> None:
        op = get_op(op_type, domain)
        assert op is not None, f"{domain}::{op_type} is not a registered op"
        self.reference = op.reference
        self.weights = DerivedTensors()

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        weight = inputs[1]
        if weight is not None and weight.dim() == 2:
            nk = self.weights.get(weight, "nk", lambda w: w.t().contiguous())
            inputs = [inputs[0], nk.t(), *inputs[2:]]
        return self.reference(ctx, inputs, attrs)


def _register() -> None:
    for op_type, domain in (("MatMul", ""), ("FusedMatMul", "tensorkiln")):
        impl = TransposedWeight(op_type, domain)
        register_tactic(Tactic("linear_nt", op_type, "cpu", impl.run, domain, _supports))


_register()

__all__ = ["TransposedWeight"]
