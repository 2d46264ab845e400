"""Sequence and Optional ops, one family.

At run time a sequence is a Python list of tensors and an optional is its element (a
tensor or a list) or None when empty; the IR type of both is None (unknown). Every op
here returns its outputs as a list, one entry per output, so that a sequence output
(itself a list) is never mistaken for several outputs. Sequences are never changed in
place: another node may still read the one it was given.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..ir import DType, Graph, Node, TensorType
from .registry import REQUIRED, InferContext, Op, RunContext, Tensor, normalize_axis, register

Sequence = list


def _position(value: Optional[Tensor], length: int, default: int, allow_end: bool) -> int:
    """A position input as an index into a sequence of `length`; negative counts from the end."""
    if value is None:
        return default
    p = int(value.reshape(()).item())
    hi = length if allow_end else length - 1
    if not -length <= p <= hi:
        raise IndexError(f"position {p} is out of range for a sequence of length {length}")
    return p + length if p < 0 else p


def _scalar_type(dtype: DType) -> TensorType:
    return TensorType(dtype, ())


@register
class SequenceEmpty(Op):
    name = "SequenceEmpty"
    attrs = {"dtype": int(DType.FLOAT32.value)}

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Sequence]:
        return [[]]


@register
class SequenceConstruct(Op):
    name = "SequenceConstruct"

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Sequence]:
        return [list(inputs)]


@register
class SequenceInsert(Op):
    name = "SequenceInsert"

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Sequence]:
        seq, tensor = inputs[0], inputs[1]
        position = inputs[2] if len(inputs) > 2 else None
        at = _position(position, len(seq), len(seq), allow_end=True)
        return [seq[:at] + [tensor] + seq[at:]]


@register
class SequenceAt(Op):
    name = "SequenceAt"

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Tensor]:
        seq = inputs[0]
        return [seq[_position(inputs[1], len(seq), 0, allow_end=False)]]


@register
class SequenceErase(Op):
    name = "SequenceErase"

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Sequence]:
        seq = inputs[0]
        position = inputs[1] if len(inputs) > 1 else None
        at = _position(position, len(seq), len(seq) - 1, allow_end=False)
        return [seq[:at] + seq[at + 1:]]


@register
class SequenceLength(Op):
    name = "SequenceLength"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [_scalar_type(DType.INT64)]

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Tensor]:
        return [torch.tensor(len(inputs[0]), dtype=torch.int64, device=ctx.device)]


@register
class SplitToSequence(Op):
    name = "SplitToSequence"
    attrs = {"axis": 0, "keepdims": 1}

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Sequence]:
        x = inputs[0]
        split = inputs[1] if len(inputs) > 1 else None
        axis = normalize_axis(attrs["axis"], x.dim())
        if split is None:
            # keepdims only applies here, where every piece has length 1.
            pieces = list(torch.split(x, 1, dim=axis))
            if not attrs["keepdims"]:
                pieces = [p.squeeze(axis) for p in pieces]
            return [pieces]
        if split.dim() == 0:
            return [list(torch.split(x, int(split.item()), dim=axis))]
        sizes = [int(s) for s in split.reshape(-1).tolist()]
        if sum(sizes) != x.shape[axis]:
            raise ValueError(f"split sizes {sizes} do not add up to dimension {axis} of size {x.shape[axis]}")
        return [list(torch.split(x, sizes, dim=axis))]


@register
class ConcatFromSequence(Op):
    name = "ConcatFromSequence"
    attrs = {"axis": REQUIRED, "new_axis": 0}

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Tensor]:
        seq = inputs[0]
        if not seq:
            raise ValueError("cannot concatenate an empty sequence")
        rank = seq[0].dim()
        if attrs["new_axis"]:
            return [torch.stack(seq, normalize_axis(attrs["axis"], rank + 1))]
        return [torch.cat(seq, normalize_axis(attrs["axis"], rank))]


@register
class SequenceMap(Op):
    name = "SequenceMap"
    attrs = {"body": REQUIRED}

    def check(self, node: Node) -> Optional[str]:
        body: Graph = node.attrs["body"]
        if len(body.inputs) != len(node.inputs):
            return f"the body takes {len(body.inputs)} inputs; the node has {len(node.inputs)}"
        if len(body.outputs) != len(node.outputs):
            return f"the body gives {len(body.outputs)} outputs; the node has {len(node.outputs)}"
        return None

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Sequence]:
        body: Graph = attrs["body"]
        seq = inputs[0]
        for k, extra in enumerate(inputs[1:], 1):
            if isinstance(extra, list) and len(extra) != len(seq):
                raise ValueError(f"input {k} is a sequence of length {len(extra)}; input 0 has length {len(seq)}")
        results: list[Sequence] = [[] for _ in body.outputs]
        for i, element in enumerate(seq):
            args = [element] + [extra[i] if isinstance(extra, list) else extra for extra in inputs[1:]]
            for out, value in zip(results, ctx.run_subgraph(body, args)):
                out.append(value)
        return results


@register
class Optional_(Op):
    name = "Optional"
    attrs = {"type": None}

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
        return [inputs[0] if inputs else None]


@register
class OptionalHasElement(Op):
    name = "OptionalHasElement"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [_scalar_type(DType.BOOL)]

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Tensor]:
        present = bool(inputs) and inputs[0] is not None
        return [torch.tensor(present, dtype=torch.bool, device=ctx.device)]


@register
class OptionalGetElement(Op):
    name = "OptionalGetElement"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        # Known only when the input is a plain tensor (allowed since opset 18).
        return [ctx.type(0)]

    def reference(self, ctx: RunContext, inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
        if inputs[0] is None:
            raise ValueError("the optional input is empty")
        return [inputs[0]]
