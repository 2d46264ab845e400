"""Fuse embedding lookups and their sum into the LayerNormalization that reads it
(tensorkiln::EmbedLayerNormalization, ops/embed_layer_norm.py).

BERT's embeddings, after folding (the position lookup of arange(S) folds to a constant):

    SkipLayerNormalization(Add(Gather(word, input_ids), Gather(token_type, token_type_ids)), position)

are four kernels on a GPU (two gathers, the add, the norm) where one reads each gathered row once.
At batch 1 each costs a launch and a pass over [S, H].

The sum the norm reads is taken apart through Add layers into terms. A term produced by a Gather
on axis 0 of a constant 2-D table, by ids with the output's leading dims, becomes an (ids, table)
lookup; any other term is dense, and at most one dense term, covering whole rows, is allowed. (An
engine built for a range of sequence lengths gathers BERT's positions by ids [1, S] that broadcast
over the batch: that lookup stays a layer of its own and its rows are the dense term.) At least
one lookup is needed. Every Add and Gather taken in must be read by nothing else (and not be a
graph output), except the whole sum: when something else reads it (a pre-LN transformer's first
residual), the fused layer gives it as its second output. The fused layer takes the place of the
LayerNorm, or of the Add that makes the whole sum when that sum is read elsewhere.

Runs after `fuse_skip_layer_norms` (whose SkipLayerNormalization it also takes: x and skip are two
terms) and after constant folding.
"""

from __future__ import annotations

from typing import Optional, Union

from ..ir import Graph, Node, Value
from ..ops.fused_conv import DOMAIN
from ..ops.skip_layer_norm import MAX_NORMALIZED_SIZE, row_broadcast_reason
from .context import PassContext
from .fusion.rules.patterns import GraphLookup

RULE = "embed_layer_norm"


class _Terms:
    """The sum taken apart: lookups (ids, table), dense terms, and the layers absorbed."""

    def __init__(self) -> None:
        self.lookups: list[tuple[Value, Value]] = []
        self.dense: list[Value] = []
        self.absorbed: list[Node] = []


def _read_only_by(lookup: GraphLookup, graph: Graph, v: Value, reader: Node) -> bool:
    return not any(o is v or o.name == v.name for o in graph.outputs) and lookup.readers(v) == [reader]


def _lookup_of(lookup: GraphLookup, v: Value) -> Optional[tuple[Node, Value, Value]]:
    """(gather, ids, table) when `v` is a Gather on axis 0 of a constant 2-D table by integer ids."""
    node = lookup.producer(v)
    if node is None or node.op_type != "Gather" or node.domain or len(node.inputs) != 2:
        return None
    table, ids = node.inputs
    if table is None or ids is None or table.const is None or table.shape is None or len(table.shape) != 2:
        return None
    if int(node.attrs.get("axis", 0)) not in (0, -2):
        return None
    if ids.dtype is None or ids.dtype.short not in ("int32", "int64") or ids.shape is None:
        return None
    return node, ids, table


def _take_apart(lookup: GraphLookup, graph: Graph, v: Value, reader: Node, terms: _Terms, rows: tuple) -> None:
    """Add the terms of `v` (read by `reader`) to `terms`; `rows` are the output's leading dims."""
    if _read_only_by(lookup, graph, v, reader):
        found = _lookup_of(lookup, v)
        if found is not None and tuple(found[1].shape) == rows:
            gather, ids, table = found
            terms.lookups.append((ids, table))
            terms.absorbed.append(gather)
            return
        node = lookup.producer(v)
        if node is not None and node.op_type == "Add" and not node.domain and len(node.inputs) == 2 \
                and all(x is not None and x.dtype == v.dtype for x in node.inputs) \
                and any(_has_lookup(lookup, x) for x in node.inputs):
            terms.absorbed.append(node)
            for x in node.inputs:
                _take_apart(lookup, graph, x, node, terms, rows)
            return
    terms.dense.append(v)


def _has_lookup(lookup: GraphLookup, v: Value, depth: int = 8) -> bool:
    if _lookup_of(lookup, v) is not None:
        return True
    node = lookup.producer(v)
    if depth == 0 or node is None or node.op_type != "Add" or node.domain:
        return False
    return any(x is not None and _has_lookup(lookup, x, depth - 1) for x in node.inputs)


class _Plan:
    def __init__(self, norm: Node, terms: _Terms, whole_sum: Optional[Value], place: Node):
        self.norm, self.terms, self.whole_sum, self.place = norm, terms, whole_sum, place


def _plan(lookup: GraphLookup, graph: Graph, norm: Node) -> Union[_Plan, str, None]:
    """What to fuse at `norm` (None: no lookup feeds it, nothing to report), or why not."""
    out = norm.outputs[0]
    rank = None if out.shape is None else len(out.shape)
    if rank is None or rank == 0:
        return None
    is_skip = norm.op_type == "SkipLayerNormalization"
    axis = int(norm.attrs.get("axis", -1))
    if (axis + rank if axis < 0 else axis) != rank - 1:
        return None
    terms = _Terms()
    rows = tuple(out.shape[:-1])
    whole_sum: Optional[Value] = None
    if is_skip:
        if norm.attrs.get("sum_output"):
            whole_sum = norm.outputs[1]
        roots = [norm.inputs[0], norm.inputs[1]]
        for v in roots:
            _take_apart(lookup, graph, v, norm, terms, rows)
    else:
        if len(norm.outputs) != 1:
            return None
        x = norm.inputs[0]
        if not _has_lookup(lookup, x):
            return None
        producer = lookup.producer(x)
        if producer is not None and producer.op_type == "Add" and not _read_only_by(lookup, graph, x, norm):
            # The whole sum is read elsewhere too: the fused layer gives it, in the Add's place.
            whole_sum = x
            terms.absorbed.append(producer)
            for v in producer.inputs:
                _take_apart(lookup, graph, v, producer, terms, rows)
        else:
            _take_apart(lookup, graph, x, norm, terms, rows)
    if not terms.lookups:
        return None
    tables = [t for _, t in terms.lookups]
    dtype = out.dtype
    if dtype is None or not dtype.is_float:
        return f"the normalized value is {dtype.short if dtype else 'of unknown dtype'}"
    floats = tables + terms.dense + [v for v in norm.inputs[2 if is_skip else 1:] if v is not None]
    if any(v.dtype != dtype for v in floats):
        return "the tables, dense terms, gamma and beta do not share the normalized value's dtype"
    width = tables[0].shape[1]
    if any(t.shape[1] != width for t in tables) or not isinstance(width, int):
        return "the tables' row widths differ or are not static"
    if width > MAX_NORMALIZED_SIZE:
        return f"rows of {width} elements exceed the fused kernel's {MAX_NORMALIZED_SIZE}"
    shape = tuple(out.shape)
    if shape[-1] != width:
        return f"the output rows {list(shape)} are not the tables' width {width}"
    if len(terms.dense) > 1:
        return f"{len(terms.dense)} dense terms besides the lookups (the fused layer adds one)"
    if terms.dense:
        reason = row_broadcast_reason(shape, terms.dense[0].shape, rank - 1)
        if reason is not None:
            return f"dense term '{terms.dense[0].name}': {reason}"
    place = norm
    if whole_sum is not None and not is_skip:
        place = lookup.producer(whole_sum)
        gamma_beta = [v for v in norm.inputs[1:] if v is not None]
        nodes = graph.nodes
        for v in gamma_beta:
            producer = lookup.producer(v)
            if producer is not None and nodes.index(producer) > nodes.index(place):
                return "the sum is read elsewhere and gamma/beta are computed after it"
    return _Plan(norm, terms, whole_sum, place)


def fuse_embed_layer_norms(graph: Graph, ctx: PassContext) -> Graph:
    """LayerNormalization / SkipLayerNormalization of a sum of embedding lookups ->
    tensorkiln::EmbedLayerNormalization."""
    lookup = GraphLookup(graph)
    plans: list[_Plan] = []
    claimed: set[int] = set()
    for node in graph.nodes:
        is_norm = (node.op_type == "LayerNormalization" and not node.domain) or \
            (node.op_type == "SkipLayerNormalization" and node.domain == DOMAIN)
        if not is_norm:
            continue
        plan = _plan(lookup, graph, node)
        if plan is None:
            continue
        if isinstance(plan, str):
            ctx.declined(RULE, node.name, plan)
            continue
        if any(id(n) in claimed for n in plan.terms.absorbed):
            continue
        claimed.update(id(n) for n in plan.terms.absorbed)
        plans.append(plan)
    if not plans:
        return graph
    graph.opsets.setdefault(DOMAIN, 1)
    replace: dict[int, Optional[Node]] = {}
    for plan in plans:
        fused = _fused_node(plan)
        for n in plan.terms.absorbed + [plan.norm]:
            replace[id(n)] = None
        replace[id(plan.place)] = fused
        ctx.rewrote(RULE, plan.norm.name, f"{len(plan.terms.lookups)} lookup(s)"
                    + (" and a dense term" if plan.terms.dense else ""))
    graph.nodes = [replace.get(id(n), n) for n in graph.nodes if replace.get(id(n), n) is not None]
    return graph


def _fused_node(plan: _Plan) -> Node:
    norm = plan.norm
    is_skip = norm.op_type == "SkipLayerNormalization"
    params = norm.inputs[2:4] if is_skip else norm.inputs[1:3]
    gamma = params[0]
    beta = params[1] if len(params) > 1 else None
    dense = plan.terms.dense[0] if plan.terms.dense else None
    inputs: list[Optional[Value]] = [gamma, beta, dense]
    for ids, table in plan.terms.lookups:
        inputs += [ids, table]
    outputs = [norm.outputs[0]] + ([plan.whole_sum] if plan.whole_sum is not None else [])
    attrs = {"epsilon": float(norm.attrs.get("epsilon", 1e-5)), "stash_type": int(norm.attrs.get("stash_type", 1)),
             "sum_output": int(plan.whole_sum is not None)}
    node = Node("EmbedLayerNormalization", inputs, outputs, attrs, name=f"{norm.name}/EmbedLayerNormalization",
                domain=DOMAIN, opset=1)
    node.meta["fused_from"] = [n.name for n in plan.terms.absorbed] + norm.meta.get("fused_from", [norm.name])
    return node
