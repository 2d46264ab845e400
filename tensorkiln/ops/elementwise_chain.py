"""tensorkiln::ElementwiseChain: a run of elementwise ops as one layer, driven by a small program.

The `program` attribute is plain JSON-able data (so the engine file stores it as is), a
list of steps run in order, each:

    {"op": "Add", "domain": "", "opset": 17, "attrs": {...}, "args": [ARG, ...]}

where each ARG says where one operand of the step comes from:

    {"prev": 1}                                   the previous step's result (the running value)
    {"input": i}                                  input i of the layer
    {"const": 0.5, "dtype": "float32", "shape": [1]}  a one-element constant, written inline
    null                                          an absent optional operand (Clip without min)

The first step reads no previous result; every later step reads it at least once. The
layer's output is the last step's result.

Each step runs the registered op's own shape inference and reference implementation on
the step's operands, so the chain's output dtype, broadcasting and values are exactly
those of the ops it replaced. A backend may compile the program to one kernel instead
(the args say which operands are inline scalars and which are tensors to load).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ..ir import DType, Node, TensorType, Value
from .registry import InferContext, Op, RunContext, get_op, register

DOMAIN = "tensorkiln"
OP_TYPE = "ElementwiseChain"


def _arg_kind(arg: Any) -> str:
    if arg is None:
        return "absent"
    if isinstance(arg, dict):
        for kind in ("prev", "input", "const"):
            if kind in arg:
                return kind
    return "invalid"


def program_problem(program: Any, num_inputs: int) -> Optional[str]:
    """Why `program` is not a valid chain program for a layer with `num_inputs` inputs, or None."""
    if not isinstance(program, list) or not program:
        return "program must be a non-empty list of steps"
    for k, step in enumerate(program):
        where = f"step {k}"
        if not isinstance(step, dict) or not isinstance(step.get("op"), str):
            return f"{where} has no op name"
        op = get_op(step["op"], step.get("domain", ""))
        if op is None:
            return f"{where}: unknown op '{step['op']}'"
        args = step.get("args")
        if not isinstance(args, list) or not args:
            return f"{where} ({step['op']}) has no operands"
        kinds = [_arg_kind(a) for a in args]
        if "invalid" in kinds:
            return f"{where} ({step['op']}): operand {kinds.index('invalid')} is not prev/input/const/null"
        if k == 0 and "prev" in kinds:
            return f"{where} ({step['op']}) reads a previous result, but it is the first step"
        if k > 0 and "prev" not in kinds:
            return f"{where} ({step['op']}) does not read the previous result"
        for a in args:
            if _arg_kind(a) == "input" and not (isinstance(a["input"], int) and 0 <= a["input"] < num_inputs):
                return f"{where} ({step['op']}) reads input {a['input']}, but the layer has {num_inputs}"
    return None


def _const_array(arg: dict) -> np.ndarray:
    dtype = DType.parse(arg["dtype"])
    return np.full(tuple(arg["shape"]), arg["const"], dtype=dtype.numpy)


def _step_nodes(node_inputs: list[Optional[Value]], program: list[dict]) -> list[Node]:
    """One stand-alone node per step, whose input Values carry the types the step sees, so an
    op's own `infer` and `check` can run on it. Output types are filled in as it goes."""
    nodes: list[Node] = []
    prev: Optional[Value] = None
    for k, step in enumerate(program):
        inputs: list[Optional[Value]] = []
        for a in step["args"]:
            kind = _arg_kind(a)
            if kind == "prev":
                inputs.append(prev)
            elif kind == "input":
                inputs.append(node_inputs[a["input"]])
            elif kind == "const":
                inputs.append(Value(f"step{k}_const", const=_const_array(a)))
            else:
                inputs.append(None)
        out = Value(f"step{k}_out")
        n = Node(step["op"], inputs, [out], dict(step.get("attrs", {})), name=f"step{k}",
                 domain=step.get("domain", ""), opset=int(step.get("opset", 0)))
        op = get_op(n.op_type, n.domain)
        types = op.infer(InferContext(node=n, input_types=[None if v is None else v.type for v in inputs],
                                      attrs=n.attrs))
        out.type = types[0] if types else None
        nodes.append(n)
        prev = out
    return nodes


@register
class ElementwiseChain(Op):
    name = OP_TYPE
    domain = DOMAIN
    attrs = {"program": []}

    def check(self, node: Node) -> Optional[str]:
        program = node.attrs.get("program")
        problem = program_problem(program, len(node.inputs))
        if problem:
            return problem
        try:
            steps = _step_nodes(node.inputs, program)
        except Exception as exc:  # noqa: BLE001 - an op's inference error is the reason
            return f"shape inference of the program failed: {exc}"
        for k, n in enumerate(steps):
            reason = get_op(n.op_type, n.domain).check(n)
            if reason:
                return f"step {k} ({n.op_type}): {reason}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        program = ctx.attrs.get("program")
        if program_problem(program, ctx.num_inputs):
            return [None]
        inputs = [None if v is None else Value(v.name, t, v.const)
                  for v, t in zip(ctx.node.inputs, ctx.input_types)]
        return [_step_nodes(inputs, program)[-1].outputs[0].type]

    def reference(self, ctx: RunContext, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        prev: Optional[torch.Tensor] = None
        device = ctx.device
        for step in attrs["program"]:
            operands: list[Optional[torch.Tensor]] = []
            for a in step["args"]:
                kind = _arg_kind(a)
                if kind == "prev":
                    operands.append(prev)
                elif kind == "input":
                    operands.append(inputs[a["input"]])
                elif kind == "const":
                    operands.append(torch.full(tuple(a["shape"]), a["const"], dtype=DType.parse(a["dtype"]).torch,
                                               device=device))
                else:
                    operands.append(None)
            # The op's own reference never writes into its operands, so the layer's inputs stay intact.
            result = get_op(step["op"], step.get("domain", "")).reference(ctx, operands, step.get("attrs", {}))
            prev = result if isinstance(result, torch.Tensor) else result[0]
        assert prev is not None
        return prev
