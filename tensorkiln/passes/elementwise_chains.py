"""Group maximal chains of elementwise layers into one `tensorkiln::ElementwiseChain` layer.

    # Sigmoid(Mul(Add(x, b), y)) -> ElementwiseChain(x, b, y){program: Add, Mul, Sigmoid}

A chain is a sequence of elementwise layers where each one's output is read only by the
next (once or more, as in Mul(t, t)) and is not a graph output; the next layer reads it
as its running value and may also read constants or other tensors. One-element constants
are written into the program; other operands become the layer's inputs. The chain's
output Value is the last layer's, so tensor names survive.

It runs last in the pipeline, after conv/matmul epilogue fusion has absorbed the bias and
activation layers that belong to a producer: what is left are the free-standing runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..ir import Graph, Node, Value
from ..ops.elementwise_chain import DOMAIN as CHAIN_DOMAIN, OP_TYPE as CHAIN_OP
from ..ops.infer import infer_node
from .context import PassContext

RULE = "elementwise_chain"

# Elementwise ops a chain may hold: each output element depends only on the same element of
# each operand (after broadcasting), and the output keeps the dtype of the input it computes on.
UNARY_STEP_OPS = ("Abs", "Neg", "Floor", "Ceil", "Round", "Sign", "Reciprocal", "Sqrt", "Exp", "Log", "Erf", "Sin",
                  "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Relu", "Sigmoid",
                  "Tanh", "Softsign", "Softplus", "LeakyRelu", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish",
                  "ThresholdedRelu", "Gelu", "Mish", "Shrink", "Swish")
BINARY_STEP_OPS = ("Add", "Sub", "Mul", "Div", "Pow", "Mod", "PRelu")


def _one_input(node: Node) -> Optional[str]:
    return None if len(node.inputs) == 1 and node.inputs[0] is not None else "takes one input"


def _two_inputs(node: Node) -> Optional[str]:
    if len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return f"has {len(node.inputs)} inputs (a chain step takes two)"
    return None


def _constant_bounds(node: Node) -> Optional[str]:
    if not node.inputs or node.inputs[0] is None:
        return "has no input"
    for v in node.inputs[1:]:
        if v is not None and not v.is_const:
            return f"bound '{v.name}' is not a constant"
    return None


# A check per op: why a node of it cannot be a chain step, or None.
StepCheck = Callable[[Node], Optional[str]]
STEP_CHECKS: dict[str, StepCheck] = {
    **{op: _one_input for op in UNARY_STEP_OPS},
    **{op: _two_inputs for op in BINARY_STEP_OPS},
    # Max/Min are variadic in ONNX; a chain step takes the two-input form.
    "Max": _two_inputs, "Min": _two_inputs,
    # Clip(x, min, max) with bounds known at build time.
    "Clip": _constant_bounds,
}


def _json_attr(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return not (isinstance(v, float) and not np.isfinite(v))
    if isinstance(v, (list, tuple)):
        return all(_json_attr(x) for x in v)
    return False


def _step_problem(node: Node) -> Optional[str]:
    """Why this node cannot be a chain step (None if it can). Non-elementwise ops give ''."""
    if node.domain or node.op_type not in STEP_CHECKS:
        return ""
    if len(node.outputs) != 1:
        return f"has {len(node.outputs)} outputs"
    reason = STEP_CHECKS[node.op_type](node)
    if reason:
        return reason
    bad = [k for k, v in node.attrs.items() if not _json_attr(v)]
    if bad:
        return f"attribute '{bad[0]}' is not plain data"
    return None


@dataclass
class _Links:
    """Which eligible node continues which chain."""

    next_of: dict[int, Node]
    prev_of: dict[int, Node]


def _find_links(graph: Graph, eligible: dict[int, Node], ctx: PassContext) -> _Links:
    consumers = graph.consumers()
    outputs = {v.name for v in graph.outputs}
    next_of: dict[int, Node] = {}
    prev_of: dict[int, Node] = {}
    for node in graph.nodes:
        if id(node) not in eligible:
            continue
        out = node.outputs[0]
        readers = consumers.get(out.name, [])
        distinct = list({id(r): r for r in readers}.values())
        eligible_readers = [r for r in distinct if id(r) in eligible]
        if not eligible_readers:
            continue
        if out.name in outputs:
            ctx.declined(RULE, node.name, f"'{out.name}' is a graph output, so the chain ends at '{node.name}'")
            continue
        if len(distinct) > 1:
            others = ", ".join(f"'{r.name}'" for r in distinct)
            ctx.declined(RULE, node.name, f"'{out.name}' is read by {len(distinct)} layers ({others}), "
                                          f"so the chain ends at '{node.name}'")
            continue
        reader = distinct[0]
        if id(reader) in prev_of:
            # Two chains end in one binary layer: it continues the first, the other ends there.
            continue
        next_of[id(node)] = reader
        prev_of[id(reader)] = node
    return _Links(next_of, prev_of)


def _inline_const(v: Value) -> Optional[dict]:
    """A one-element constant as a program literal, when it can be written exactly in JSON."""
    c = v.const
    if c is None or c.size != 1 or c.dtype.kind not in "fiu":
        return None
    item = c.reshape(-1)[0].item()
    if isinstance(item, float) and not np.isfinite(item):
        return None
    if isinstance(item, int) and not -2 ** 63 <= item < 2 ** 63:
        return None  # torch.full cannot take it back
    return {"const": item, "dtype": v.dtype.short, "shape": [int(d) for d in c.shape]}


def _build_chain(chain: list[Node]) -> tuple[list[Optional[Value]], list[dict]]:
    inputs: list[Value] = []
    program: list[dict] = []
    for k, node in enumerate(chain):
        prev_out = chain[k - 1].outputs[0] if k else None
        args: list[Optional[dict]] = []
        for v in node.inputs:
            if v is None:
                args.append(None)
            elif prev_out is not None and v is prev_out:
                args.append({"prev": 1})
            elif (lit := _inline_const(v)) is not None:
                args.append(lit)
            else:
                index = next((i for i, x in enumerate(inputs) if x is v), None)
                if index is None:
                    index = len(inputs)
                    inputs.append(v)
                args.append({"input": index})
        program.append({"op": node.op_type, "domain": node.domain, "opset": int(node.opset),
                        "attrs": {k2: list(a) if isinstance(a, tuple) else a for k2, a in node.attrs.items()},
                        "args": args})
    return list(inputs), program


def fuse_elementwise_chains(graph: Graph, ctx: PassContext) -> Graph:
    eligible: dict[int, Node] = {}
    for node in graph.nodes:
        problem = _step_problem(node)
        if problem is None:
            eligible[id(node)] = node
        elif problem:
            ctx.declined(RULE, node.name, f"{node.op_type} {problem}")
    links = _find_links(graph, eligible, ctx)

    taken = {n.name for n in graph.nodes} | graph.defined_names()
    replaced: dict[int, Optional[Node]] = {}  # id(node) -> its chain layer (at the last node), or None (removed)
    for node in graph.nodes:
        if id(node) not in eligible or id(node) in links.prev_of:
            continue
        chain = [node]
        while id(chain[-1]) in links.next_of:
            chain.append(links.next_of[id(chain[-1])])
        if len(chain) < 2:
            continue
        inputs, program = _build_chain(chain)
        last = chain[-1]
        name = f"{last.name}_chain"
        i = 1
        while name in taken:
            name = f"{last.name}_chain_{i}"
            i += 1
        taken.add(name)
        fused = Node(CHAIN_OP, inputs, [last.outputs[0]], {"program": program}, name=name, domain=CHAIN_DOMAIN,
                     opset=1, meta={"fused_from": [n.name for n in chain]})
        infer_node(fused)
        for n in chain[:-1]:
            replaced[id(n)] = None
        replaced[id(last)] = fused
        ctx.rewrote(RULE, fused.name, "+".join(n.op_type for n in chain) + f" -> {CHAIN_OP}")
    # The chain layer takes the last node's place: every operand of the chain is defined before it.
    nodes: list[Node] = []
    for n in graph.nodes:
        if id(n) not in replaced:
            nodes.append(n)
        elif replaced[id(n)] is not None:
            nodes.append(replaced[id(n)])
    graph.nodes = nodes
    return graph
