"""If: runs one of two subgraphs on a boolean condition.

(The module is ``if_`` because ``if`` is a Python keyword.) The branches take no
inputs; whatever they read from the enclosing graphs the executor resolves. Their
outputs may be tensors, sequences (lists) or optionals, passed through as they are.
"""

from __future__ import annotations

from typing import Any, Optional

from ..ir import Node, TensorType
from ..ir.shape import Dim
from .registry import REQUIRED, InferContext, Op, RunContext, Tensor, register


def merge_branch_types(a: Optional[TensorType], b: Optional[TensorType]) -> Optional[TensorType]:
    """The type both branches agree on: differing dimensions become unknown."""
    if a is None or b is None or a.dtype != b.dtype:
        return None
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return TensorType(a.dtype, None)
    dims: list[Dim] = [x if x == y else None for x, y in zip(a.shape, b.shape)]
    return TensorType(a.dtype, tuple(dims))


@register
class If(Op):
    name = "If"
    attrs = {"then_branch": REQUIRED, "else_branch": REQUIRED}

    def check(self, node: Node) -> Optional[str]:
        then_n, else_n = len(node.attrs["then_branch"].outputs), len(node.attrs["else_branch"].outputs)
        if then_n != else_n or then_n != len(node.outputs):
            return (f"then_branch gives {then_n} outputs and else_branch {else_n}; "
                    f"the node has {len(node.outputs)}")
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        if ctx.infer_subgraph is None:
            return [None] * ctx.num_outputs
        then_types = ctx.infer_subgraph(ctx.attrs["then_branch"], [])
        else_types = ctx.infer_subgraph(ctx.attrs["else_branch"], [])
        return [merge_branch_types(a, b) for a, b in zip(then_types, else_types)]

    def reference(self, ctx: RunContext, inputs: list[Optional[Tensor]], attrs: dict[str, Any]) -> list[Any]:
        cond = inputs[0]
        if cond.numel() != 1:
            raise ValueError(f"If condition must have exactly one element, got shape {list(cond.shape)}")
        branch = attrs["then_branch"] if bool(cond.reshape(()).item()) else attrs["else_branch"]
        return list(ctx.run_subgraph(branch, []))

