"""Scan: runs a body over slices of its scan inputs, threading state through.

Opset 9+: inputs are N initial states then M scan inputs; each scan input is sliced
along its ``scan_input_axes`` entry (from the end where ``scan_input_directions`` is 1);
the body takes (states..., slices...) and gives (states..., scan elements...); each scan
output stacks its elements along its ``scan_output_axes`` entry (in reverse order where
``scan_output_directions`` is 1).
Opset 8: the first input is an optional ``sequence_lens`` and every input has a leading
batch axis; the scan runs per batch entry along axis 1, for that entry's length, with
``directions`` per scan input. Scan outputs of entries shorter than the longest are
padded with zeros.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..ir import Graph, Node, TensorType
from ..ir.shape import Dim
from .registry import REQUIRED, InferContext, Op, RunContext, Tensor, normalize_axis, register


def _run_scan(ctx: RunContext, body: Graph, states: list[Any], scans: list[Tensor], axes: list[int],
              directions: list[int], length: int) -> tuple[list[Any], list[list[Tensor]]]:
    num_outputs = len(body.outputs) - len(states)
    elements: list[list[Tensor]] = [[] for _ in range(num_outputs)]
    for t in range(length):
        slices = [x.select(axis, length - 1 - t if reverse else t) for x, axis, reverse in zip(scans, axes, directions)]
        outs = ctx.run_subgraph(body, [*states, *slices])
        states = list(outs[:len(states)])
        for k, value in enumerate(outs[len(states):]):
            elements[k].append(value)
    return states, elements


def _empty_elements(body: Graph, index: int, device: torch.device) -> Tensor:
    t = body.outputs[index].type
    if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape) or not t.dtype.has_torch:
        raise ValueError(f"the scan is empty and scan output '{body.outputs[index].name}' has no static type "
                         f"to make an empty result of")
    return torch.zeros((0, *t.shape), dtype=t.dtype.torch, device=device)


@register
class Scan(Op):
    name = "Scan"
    since_opset = 8
    attrs = {"body": REQUIRED, "num_scan_inputs": REQUIRED, "directions": None, "scan_input_axes": None,
             "scan_input_directions": None, "scan_output_axes": None, "scan_output_directions": None}

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = super().normalize(attrs, opset)
        # Opset 8's form (sequence_lens input, leading batch axis) is recorded for the
        # reference, which sees only attributes.
        out["batched"] = 1 if opset < 9 else 0
        return out

    def _layout(self, node_inputs: int, attrs: dict[str, Any], opset: int) -> tuple[int, int]:
        """(index of the first state input, number of states)."""
        first = 1 if opset < 9 else 0
        return first, node_inputs - first - attrs["num_scan_inputs"]

    def check(self, node: Node) -> Optional[str]:
        body: Graph = node.attrs["body"]
        first, num_states = self._layout(len(node.inputs), node.attrs, node.opset)
        if num_states < 0:
            return f"num_scan_inputs {node.attrs['num_scan_inputs']} is more than the node's inputs"
        if len(body.inputs) != num_states + node.attrs["num_scan_inputs"]:
            return f"the body takes {len(body.inputs)} inputs; the node passes {len(node.inputs) - first}"
        if len(body.outputs) != len(node.outputs):
            return f"the body gives {len(body.outputs)} outputs; the node has {len(node.outputs)}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        if ctx.infer_subgraph is None:
            return [None] * ctx.num_outputs
        attrs = ctx.attrs
        first, num_states = self._layout(ctx.num_inputs, attrs, ctx.opset)
        batched = ctx.opset < 9
        m = attrs["num_scan_inputs"]
        in_axes = [1] * m if batched else (attrs["scan_input_axes"] or [0] * m)
        states = [ctx.type(first + i) for i in range(num_states)]
        if batched:
            states = [None if t is None or t.shape is None else TensorType(t.dtype, t.shape[1:]) for t in states]
        slices: list[Optional[TensorType]] = []
        length: Dim = None
        for j in range(m):
            t = ctx.type(first + num_states + j)
            if t is None or t.shape is None:
                slices.append(None)
                continue
            axis = normalize_axis(in_axes[j], len(t.shape))
            if j == 0:
                length = t.shape[axis]
            slices.append(TensorType(t.dtype, t.shape[:axis] + t.shape[axis + 1:]))
        body_types = ctx.infer_subgraph(attrs["body"], states + slices)
        batch: Dim = None
        if batched and ctx.type(first) is not None and ctx.type(first).shape:
            batch = ctx.type(first).shape[0]
        out: list[Optional[TensorType]] = []
        for i, t in enumerate(body_types[:num_states]):
            out.append(None if t is None or t.shape is None else
                       TensorType(t.dtype, (batch, *t.shape) if batched else t.shape))
        out_axes = attrs["scan_output_axes"] or [0] * (len(body_types) - num_states)
        for k, t in enumerate(body_types[num_states:]):
            if t is None or t.shape is None:
                out.append(None)
                continue
            if batched:
                out.append(TensorType(t.dtype, (batch, length, *t.shape)))
                continue
            axis = normalize_axis(out_axes[k], len(t.shape) + 1)
            out.append(TensorType(t.dtype, t.shape[:axis] + (length,) + t.shape[axis:]))
        return out

    def reference(self, ctx: RunContext, inputs: list[Optional[Tensor]], attrs: dict[str, Any]) -> list[Tensor]:
        if attrs["batched"]:
            return self._batched(ctx, inputs, attrs)
        body: Graph = attrs["body"]
        m = attrs["num_scan_inputs"]
        states, scans = list(inputs[:len(inputs) - m]), list(inputs[len(inputs) - m:])
        axes = [normalize_axis(a, x.dim()) for a, x in zip(attrs["scan_input_axes"] or [0] * m, scans)]
        directions = attrs["scan_input_directions"] or [0] * m
        lengths = {x.shape[a] for x, a in zip(scans, axes)}
        if len(lengths) != 1:
            raise ValueError(f"scan inputs have different lengths {sorted(lengths)} along their scan axes")
        length = lengths.pop()
        states, elements = _run_scan(ctx, body, states, scans, axes, directions, length)
        k_outputs = len(elements)
        out_axes = attrs["scan_output_axes"] or [0] * k_outputs
        out_dirs = attrs["scan_output_directions"] or [0] * k_outputs
        results = []
        for k, values in enumerate(elements):
            if not values:
                empty = _empty_elements(body, len(states) + k, ctx.device)
                results.append(empty.movedim(0, normalize_axis(out_axes[k], empty.dim())))
                continue
            if out_dirs[k]:
                values = values[::-1]
            results.append(torch.stack(values, normalize_axis(out_axes[k], values[0].dim() + 1)))
        return states + results

    def _batched(self, ctx: RunContext, inputs: list[Optional[Tensor]], attrs: dict[str, Any]) -> list[Tensor]:
        body: Graph = attrs["body"]
        m = attrs["num_scan_inputs"]
        seq_lens = inputs[0]
        states, scans = list(inputs[1:len(inputs) - m]), list(inputs[len(inputs) - m:])
        directions = attrs["directions"] or [0] * m
        batch = scans[0].shape[0]
        max_len = scans[0].shape[1]
        final_states: list[list[Any]] = []
        outputs: list[list[Tensor]] = []
        for b in range(batch):
            length = max_len if seq_lens is None else int(seq_lens[b].item())
            # A reversed input of a shorter entry starts at that entry's own last step.
            entry = [x[b, :length] for x in scans]
            s, elements = _run_scan(ctx, body, [x[b] for x in states], entry, [0] * m, directions, length)
            final_states.append(s)
            stacked = []
            for k, values in enumerate(elements):
                if values:
                    t = torch.stack(values, 0)
                else:
                    t = _empty_elements(body, len(states) + k, ctx.device)
                if t.shape[0] < max_len:
                    t = torch.cat([t, t.new_zeros((max_len - t.shape[0], *t.shape[1:]))], 0)
                stacked.append(t)
            outputs.append(stacked)
        results = [torch.stack([f[i] for f in final_states], 0) for i in range(len(states))]
        results += [torch.stack([o[k] for o in outputs], 0) for k in range(len(body.outputs) - len(states))]
        return results
