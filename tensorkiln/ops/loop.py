"""Loop: runs a body graph while a trip count and/or a condition allow.

Inputs: M (optional int64 trip count), cond (optional bool), then the loop-carried
initial values. The body takes (iteration number, condition, carried...) and gives
(condition, carried..., scan outputs...). The node's outputs are the final carried
values and each scan output's per-iteration values stacked on a new axis 0.
Carried values may be tensors, sequences (lists) or optionals (None when empty).
The body's condition output ends the loop even when the cond input is omitted: the
spec calls it ignored there, but onnxruntime (what exporters are tested against)
honours it, and so does this.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch

from ..ir import DType, Graph, Node, TensorType, Value, is_static
from ..ir.shape import Dim
from .registry import REQUIRED, InferContext, Op, RunContext, Tensor, register


def _join(a: Optional[TensorType], b: Optional[TensorType]) -> Optional[TensorType]:
    """A type covering both: the initial value and what an iteration makes of it."""
    if a is None or b is None:
        return None
    if a.dtype != b.dtype:
        return None
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return TensorType(a.dtype, None)
    dims: list[Dim] = [x if x == y else None for x, y in zip(a.shape, b.shape)]
    return TensorType(a.dtype, tuple(dims))


def _scratch_copy(body: Graph) -> Graph:
    """A copy of the body to infer on, sharing (not copying) the values it captures."""
    defined: set[str] = set()
    captured: dict[int, Value] = {}

    def visit(g: Graph) -> None:
        defined.update(g.defined_names())
        for n in g.nodes:
            for v in n.inputs:
                if v is not None and v.name not in defined:
                    captured[id(v)] = v
            for sub in n.subgraphs():
                visit(sub)

    visit(body)
    return copy.deepcopy(body, memo=dict(captured))


@register
class Loop(Op):
    name = "Loop"
    attrs = {"body": REQUIRED}

    def check(self, node: Node) -> Optional[str]:
        body = node.attrs["body"]
        carried = len(node.inputs) - 2
        if len(body.inputs) != carried + 2:
            return f"the body takes {len(body.inputs)} inputs; the node passes {carried} carried values (+2)"
        if len(body.outputs) != len(node.outputs) + 1:
            return f"the body gives {len(body.outputs)} outputs; the node has {len(node.outputs)} (+1 condition)"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        if ctx.infer_subgraph is None:
            return [None] * ctx.num_outputs
        body: Graph = ctx.attrs["body"]
        counters = [TensorType(DType.INT64, ()), TensorType(DType.BOOL, ())]
        carried = [ctx.type(i) for i in range(2, ctx.num_inputs)]
        # Carried values may change shape from one iteration to the next: a trial run of
        # inference on a copy finds the dimensions that do, and the body is typed with
        # those left unknown so no wrong static shape settles inside it.
        trial = ctx.infer_subgraph(_scratch_copy(body), counters + carried)
        stable = [_join(c, t) if c is not None else None for c, t in zip(carried, trial[1:])]
        body_types = ctx.infer_subgraph(body, counters + stable)
        n = len(carried)
        finals = [_join(c, t) for c, t in zip(carried, body_types[1:1 + n])]
        # The trip count is data-dependent: the body's condition may end the loop early.
        scans = [None if t is None or t.shape is None else TensorType(t.dtype, (None, *t.shape))
                 for t in body_types[1 + n:]]
        return (finals + scans)[:ctx.num_outputs]

    def reference(self, ctx: RunContext, inputs: list[Optional[Tensor]], attrs: dict[str, Any]) -> list[Any]:
        body: Graph = attrs["body"]
        trip_count = inputs[0] if len(inputs) > 0 else None
        cond_in = inputs[1] if len(inputs) > 1 else None
        carried = list(inputs[2:])
        max_trips = None if trip_count is None else int(trip_count.reshape(()).item())
        keep_going = True if cond_in is None else bool(cond_in.reshape(()).item())
        device = ctx.device
        cond_value = torch.tensor(keep_going, device=device)
        num_scans = len(body.outputs) - 1 - len(carried)
        scans: list[list[Tensor]] = [[] for _ in range(num_scans)]
        i = 0
        while keep_going and (max_trips is None or i < max_trips):
            outs = ctx.run_subgraph(body, [torch.tensor(i, dtype=torch.int64, device=device), cond_value,
                                           *carried])
            carried = list(outs[1:1 + len(carried)])
            for k, value in enumerate(outs[1 + len(carried):]):
                scans[k].append(value)
            cond_value = outs[0]
            keep_going = bool(cond_value.reshape(()).item())
            i += 1
        stacked = [torch.stack(values, 0) if values else self._empty_scan(body.outputs[1 + len(carried) + k], device)
                   for k, values in enumerate(scans)]
        return carried + stacked

    @staticmethod
    def _empty_scan(value: Value, device: torch.device) -> Tensor:
        """A scan output of a loop that ran zero times: [0, *element shape]."""
        t = value.type
        if t is None or not t.dtype.has_torch or not is_static(t.shape):
            raise ValueError(f"the loop ran zero times and scan output '{value.name}' has no static type "
                             f"to make an empty result of")
        return torch.zeros((0, *t.shape), dtype=t.dtype.torch, device=device)
