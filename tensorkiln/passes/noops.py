"""Remove layers that do nothing: their output is their input.

Two kinds of rules:
- `NoopRule`s (a table below) recognise one node that returns its first input unchanged
  (Identity, inference Dropout, Cast to the same dtype, Reshape to the same shape...).
  Removing one rewires its readers to its input, which the pattern-rule engine cannot
  express (its rewrites must produce the root's outputs), so they run as a plain sweep.
- Pattern `Rule`s for pairs that cancel or combine (Transpose after Transpose,
  Squeeze after Unsqueeze and back); they rewrite the pair into a single Transpose or an
  Identity, which the sweep then removes when it is a no-op.

The engine's output names never change: when a removed layer's output is a graph output,
the producer of its input is renamed to produce it instead; where the input is a graph
input or a constant (nothing to rename), an Identity stays.

Also holds the graph-editing helpers the cleanup passes share (`substitute`, `all_names`,
`read_names`, and `const_ints`, `has_input`, `axes_of` for reading constant inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..ir import Graph, Node, Value
from ..ops import infer_graph_types
from ..ops._shape_common import normalize_axes, slice_dim
from ..ops.reshape import infer_reshape
from .context import PassContext
from .fusion import Match, Pat, Rewriter, Rule, Var, apply_rules

_MAX_ROUNDS = 10


# -- shared graph-editing helpers ------------------------------------------------------------

def all_names(graph: Graph) -> set[str]:
    """Every value and node name in the graph and its subgraphs (for making new unique ones)."""
    names = set(graph.defined_names())
    names.update(v.name for v in graph.outputs)
    for node in graph.nodes:
        names.add(node.name)
        for sub in node.subgraphs():
            names |= all_names(sub)
    return names


def substitute(graph: Graph, mapping: dict[str, Value]) -> None:
    """Every read of a name in `mapping`, at the top level and in subgraphs' captures, reads
    the mapped Value instead (one walk for any number of replacements)."""
    if not mapping:
        return
    for node in graph.nodes:
        node.inputs = [None if v is None else mapping.get(v.name, v) for v in node.inputs]
        for sub in node.subgraphs():
            _substitute_captured(sub, mapping)


def _substitute_captured(sub: Graph, mapping: dict[str, Value]) -> None:
    # A name the subgraph defines itself means that value there, not the outer one.
    local = sub.defined_names()
    if local & mapping.keys():
        mapping = {k: v for k, v in mapping.items() if k not in local}
        if not mapping:
            return
    for node in sub.nodes:
        node.inputs = [None if v is None else mapping.get(v.name, v) for v in node.inputs]
        for inner in node.subgraphs():
            _substitute_captured(inner, mapping)
    sub.outputs = [mapping.get(v.name, v) for v in sub.outputs]


def read_names(graph: Graph) -> set[str]:
    """Names some node (or subgraph capture) reads, plus the graph's outputs."""
    names = {v.name for v in graph.outputs}
    for node in graph.nodes:
        names.update(v.name for v in node.inputs if v is not None)
        for sub in node.subgraphs():
            names |= sub.free_names()
    return names


# -- single-node no-ops ----------------------------------------------------------------------

@dataclass(frozen=True)
class NoopRule:
    """A node of one of `ops` for which `matches` is true returns its input 0 as output 0.
    `check` gives the reason a matching node must stay (reported), or None."""

    name: str
    ops: tuple[str, ...]
    matches: Callable[[Node], bool]
    check: Callable[[Node, set[str]], Optional[str]] = lambda node, read: None


def const_ints(node: Node, i: int) -> Optional[list[int]]:
    """Input i as a list of ints when it is a constant (None when absent or computed)."""
    if i >= len(node.inputs) or node.inputs[i] is None or node.inputs[i].const is None:
        return None
    return [int(x) for x in np.asarray(node.inputs[i].const).reshape(-1)]


def has_input(node: Node, i: int) -> bool:
    return i < len(node.inputs) and node.inputs[i] is not None


def axes_of(node: Node, i: int = 1) -> tuple[bool, Optional[list[int]]]:
    """(known, axes) of Squeeze/Unsqueeze: attribute before opset 13, input since."""
    if node.attrs.get("axes") is not None:
        return True, [int(a) for a in node.attrs["axes"]]
    if has_input(node, i):
        axes = const_ints(node, i)
        return axes is not None, axes
    return True, None


def _rank(v: Optional[Value]) -> Optional[int]:
    return None if v is None or v.shape is None else len(v.shape)


def _fully_named(shape) -> bool:
    # Every dim a number or a named symbol: equal names are equal sizes, so shapes compare.
    return shape is not None and all(d is not None for d in shape)


def _reshape_keeps_shape(node: Node) -> bool:
    x = node.inputs[0]
    target = list(node.attrs["shape"]) if node.attrs.get("shape") is not None else const_ints(node, 1)
    if x is None or target is None or not _fully_named(x.shape):
        return False
    try:
        out = infer_reshape(x.shape, target, node.attrs.get("allowzero", 0))
    except ValueError:
        return False
    return _fully_named(out) and tuple(out) == tuple(x.shape)


def _transpose_keeps_order(node: Node) -> bool:
    perm = node.attrs.get("perm")
    if perm is None:
        rank = _rank(node.inputs[0])
        return rank is not None and rank <= 1
    return list(perm) == list(range(len(perm)))


def _expand_keeps_shape(node: Node) -> bool:
    x = node.inputs[0]
    if x is None or x.shape is None:
        return False
    out = node.outputs[0].shape
    if _fully_named(x.shape) and _fully_named(out) and tuple(out) == tuple(x.shape):
        return True  # a target computed at run time whose dims are the input's (passes/symbolic_dims.py)
    target = const_ints(node, 1)
    if target is None or len(target) > len(x.shape):
        return False
    # Right-aligned: a target dim of 1 broadcasts nothing; an equal one neither.
    return all(t == 1 or t == d for t, d in zip(reversed(target), reversed(x.shape)))


def _pads_are_zero(node: Node) -> bool:
    pads = list(node.attrs["pads"]) if node.attrs.get("pads") is not None else const_ints(node, 1)
    return pads is not None and all(p == 0 for p in pads)


def _slice_takes_everything(node: Node) -> bool:
    x = node.inputs[0]
    if x is None or x.shape is None:
        return False
    if node.attrs.get("starts") is not None:
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = const_ints(node, 1), const_ints(node, 2)
        axes = const_ints(node, 3) if has_input(node, 3) else None
        steps = const_ints(node, 4) if has_input(node, 4) else None
        if starts is None or ends is None or (has_input(node, 3) and axes is None) \
                or (has_input(node, 4) and steps is None):
            return False
    if len(starts) != len(ends):
        return False
    try:
        axes = list(range(len(starts))) if axes is None else normalize_axes(axes, len(x.shape))
    except ValueError:
        return False
    steps = [1] * len(starts) if steps is None else steps
    for axis, start, end, step in zip(axes, starts, ends, steps):
        dim = x.shape[axis]
        if step != 1 or dim is None or slice_dim(dim, start, end, step) != dim:
            return False
    return True


def _dropout_check(node: Node, read: set[str]) -> Optional[str]:
    if node.attrs.get("_train_from_input") and has_input(node, 2):
        mode = node.inputs[2]
        if mode.const is None:
            return f"training_mode '{mode.name}' is not a constant"
        if bool(np.asarray(mode.const).reshape(-1)[0]):
            return "training_mode is true: it drops at random"
    if len(node.outputs) > 1 and node.outputs[1].name in read:
        return f"its mask output '{node.outputs[1].name}' is read"
    return None


def _cast_keeps_dtype(node: Node) -> bool:
    x = node.inputs[0]
    if x is None or x.dtype is None:
        return False
    if node.op_type == "Cast":
        return x.dtype.value == node.attrs["to"]
    like = node.inputs[1] if len(node.inputs) > 1 else None
    return like is not None and like.dtype == x.dtype


def _is_tensor_op(node: Node) -> bool:
    return bool(node.inputs) and node.inputs[0] is not None and len(node.outputs) >= 1


NOOP_RULES: tuple[NoopRule, ...] = (
    # Identity(x) -> x
    NoopRule("identity", ("Identity",), _is_tensor_op),
    # Dropout(x) -> x when not training (its mask unread)
    NoopRule("inference_dropout", ("Dropout",), _is_tensor_op, _dropout_check),
    # Cast(x: T, to=T) -> x;  CastLike(x: T, like: T) -> x
    NoopRule("same_dtype_cast", ("Cast", "CastLike"), _cast_keeps_dtype),
    # Reshape(x, shape(x)) -> x
    NoopRule("same_shape_reshape", ("Reshape",), _reshape_keeps_shape),
    # Transpose(x, perm=[0, 1, ..., n-1]) -> x
    NoopRule("identity_transpose", ("Transpose",), _transpose_keeps_order),
    # Expand(x, s) -> x when broadcasting x against s changes no dim
    NoopRule("same_shape_expand", ("Expand",), _expand_keeps_shape),
    # Pad(x, pads=0...) -> x
    NoopRule("zero_pad", ("Pad",), _pads_are_zero),
    # Slice(x, 0, end>=dim, step 1 on every sliced axis) -> x
    NoopRule("full_slice", ("Slice",), _slice_takes_everything),
    # Concat(x) -> x
    NoopRule("single_input_concat", ("Concat",), lambda n: len(n.inputs) == 1 and _is_tensor_op(n)),
    # Split(x) into one piece -> x
    NoopRule("single_output_split", ("Split",), lambda n: len(n.outputs) == 1 and _is_tensor_op(n)),
)


# -- pairs -----------------------------------------------------------------------------------

def _perm_of(node: Node, rank: Optional[int]) -> Optional[list[int]]:
    perm = node.attrs.get("perm")
    if perm is not None:
        return [int(p) for p in perm]
    return None if rank is None else list(range(rank))[::-1]


def _composed_perm(m: Match) -> tuple[Optional[list[int]], str]:
    inner, outer = m.node("inner"), m.root
    rank = _rank(m.value("x"))
    first = _perm_of(inner, rank)
    second = _perm_of(outer, len(first) if first is not None else rank)
    if first is None or second is None:
        return None, "a perm is implicit (reversal) and the rank of the input is unknown"
    if len(first) != len(second):
        return None, f"perms {first} and {second} differ in length"
    # out[j] = mid[second[j]] = x[first[second[j]]]
    return [first[j] for j in second], ""


def _check_compose(m: Match) -> Optional[str]:
    perm, reason = _composed_perm(m)
    return reason if perm is None else None


def _compose_transposes(m: Match, rw: Rewriter) -> list[Node]:
    perm, _ = _composed_perm(m)
    return [rw.node("Transpose", [m.value("x")], m.root.outputs, {"perm": perm}, like=m.root)]


def _unsqueezed_axes(node: Node, out_rank: Optional[int]) -> tuple[Optional[set[int]], str]:
    known, axes = axes_of(node)
    if not known:
        return None, f"the axes of '{node.name}' come from a non-constant input"
    if axes is None:
        return None, f"'{node.name}' has no axes"
    if out_rank is None and any(a < 0 for a in axes):
        return None, f"the rank is unknown, so the negative axes of '{node.name}' cannot be resolved"
    rank = out_rank if out_rank is not None else max(axes) + 1
    try:
        return set(normalize_axes(axes, rank)), ""
    except ValueError as exc:
        return None, str(exc)


def _squeezed_axes(node: Node) -> tuple[Optional[set[int]], str]:
    """Axes a Squeeze drops, normalised against its input's rank."""
    known, axes = axes_of(node)
    x = node.inputs[0]
    if not known:
        return None, f"the axes of '{node.name}' come from a non-constant input"
    if axes is None:
        if x is None or x.shape is None or not all(isinstance(d, int) for d in x.shape):
            return None, f"'{node.name}' squeezes every size-1 dim and its input's shape is not static"
        return {i for i, d in enumerate(x.shape) if d == 1}, ""
    rank = _rank(x)
    if rank is None and any(a < 0 for a in axes):
        return None, f"the rank is unknown, so the negative axes of '{node.name}' cannot be resolved"
    try:
        return set(normalize_axes(axes, rank if rank is not None else max(axes) + 1)), ""
    except ValueError as exc:
        return None, str(exc)


def _check_squeeze_of_unsqueeze(m: Match) -> Optional[str]:
    unsqueeze, squeeze = m.node("unsqueeze"), m.root
    dropped, reason = _squeezed_axes(squeeze)
    if dropped is None:
        return reason
    rank = _rank(unsqueeze.outputs[0])
    added, reason = _unsqueezed_axes(unsqueeze, rank)
    if added is None:
        return reason
    return None if added == dropped else f"Unsqueeze adds axes {sorted(added)}, Squeeze drops {sorted(dropped)}"


def _check_unsqueeze_of_squeeze(m: Match) -> Optional[str]:
    squeeze, unsqueeze = m.node("squeeze"), m.root
    dropped, reason = _squeezed_axes(squeeze)
    if dropped is None:
        return reason
    added, reason = _unsqueezed_axes(unsqueeze, _rank(m.value("x")))
    if added is None:
        return reason
    return None if added == dropped else f"Squeeze drops axes {sorted(dropped)}, Unsqueeze adds {sorted(added)}"


def _identity_of_x(m: Match, rw: Rewriter) -> list[Node]:
    return [rw.node("Identity", [m.value("x")], m.root.outputs, like=m.root)]


PAIR_RULES: tuple[Rule, ...] = (
    # Transpose(Transpose(x, p1), p2) -> Transpose(x, [p1[i] for i in p2])  (identity perms then vanish)
    Rule("compose_transposes", Pat("Transpose", [Pat("Transpose", [Var("x")], name="inner")]),
         _compose_transposes, _check_compose),
    # Squeeze(Unsqueeze(x, a), a) -> x
    Rule("cancel_squeeze_unsqueeze", Pat("Squeeze", [Pat("Unsqueeze", [Var("x")], name="unsqueeze")]),
         _identity_of_x, _check_squeeze_of_unsqueeze),
    # Unsqueeze(Squeeze(x, a), a) -> x  (Squeeze only drops dims of size 1)
    Rule("cancel_unsqueeze_squeeze", Pat("Unsqueeze", [Pat("Squeeze", [Var("x")], name="squeeze")]),
         _identity_of_x, _check_unsqueeze_of_squeeze),
)


# -- the pass --------------------------------------------------------------------------------

def remove_noops(graph: Graph, ctx: PassContext) -> Graph:
    first_decline = len(ctx.declines)
    for _ in range(_MAX_ROUNDS):
        before = sum(ctx.rewrites.values())
        apply_rules(graph, PAIR_RULES, ctx)
        infer_graph_types(graph)
        _sweep(graph, ctx)
        if sum(ctx.rewrites.values()) == before:
            break
    # Each round re-checks the same nodes; report each refusal once.
    ctx.declines[first_decline:] = list(dict.fromkeys(ctx.declines[first_decline:]))
    return graph


def _sweep(graph: Graph, ctx: PassContext) -> None:
    """One pass over the nodes in order. Readers are rewired through `mapping` as the scan
    reaches them (and subgraph captures at the end), so removing many no-ops stays linear."""
    read = read_names(graph)
    outputs = {v.name for v in graph.outputs}
    mapping: dict[str, Value] = {}
    producers: dict[str, Node] = {}
    kept: list[Node] = []
    for node in graph.nodes:
        node.inputs = [None if v is None else mapping.get(v.name, v) for v in node.inputs]
        rule = _matching_rule(node)
        reason = rule.check(node, read) if rule is not None else None
        if reason:
            ctx.declined(rule.name, node.name, reason)
        if rule is None or reason:
            kept.append(node)
            producers.update((v.name, node) for v in node.outputs)
            continue
        x, y = node.inputs[0], node.outputs[0]
        producer = producers.get(x.name)
        if y.name not in outputs:
            mapping[y.name] = x
            ctx.rewrote(rule.name, node.name, f"{node.op_type} removed")
        elif producer is not None and x.name not in outputs:
            # The input's producer makes the graph output directly, under the output's name.
            for n in kept:
                n.inputs = [y if v is x else v for v in n.inputs]
            for name, v in mapping.items():
                if v is x:
                    mapping[name] = y
            mapping[x.name] = y
            producer.outputs = [y if v is x else v for v in producer.outputs]
            producers[y.name] = producer
            if y.type is None:
                y.type = x.type
            ctx.rewrote(rule.name, node.name, f"{node.op_type} removed; '{producer.name}' now produces '{y.name}'")
        elif node.op_type != "Identity":
            identity = Node("Identity", [x], [y], name=node.name, opset=node.opset)
            kept.append(identity)
            producers[y.name] = identity
            ctx.rewrote(rule.name, node.name, f"{node.op_type} -> Identity (keeps output '{y.name}')")
        else:
            ctx.declined(rule.name, node.name, f"output '{y.name}' is a graph output and its input '{x.name}' "
                                               "cannot take its name")
            kept.append(node)
            producers[y.name] = node
    graph.nodes = kept
    substitute(graph, mapping)


def _matching_rule(node: Node) -> Optional[NoopRule]:
    if node.domain:
        return None
    for rule in NOOP_RULES:
        if node.op_type in rule.ops and rule.matches(node):
            return rule
    return None
