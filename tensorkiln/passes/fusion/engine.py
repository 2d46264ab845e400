"""Applying rules: find matches root-first, check, rewrite, repeat to a fixed point."""

from __future__ import annotations

from typing import Optional, Sequence, Union

from ...ir import Graph, Node, Value
from ..context import PassContext
from .rule import Const, Match, Pat, Rewriter, Rule, Var

_MAX_ROUNDS = 50


class _Index:
    """Who produces each value and how many readers it has. With `ignore_sharing`, every
    value counts as read once: used to tell a pattern blocked only by sharing."""

    def __init__(self, graph: Graph, ignore_sharing: bool = False):
        self.ignore_sharing = ignore_sharing
        self.producer: dict[str, Node] = {}
        self.uses: dict[str, int] = {}
        for n in graph.nodes:
            for v in n.outputs:
                self.producer[v.name] = n
        for n in graph.nodes:
            for v in n.inputs:
                if v is not None:
                    self.uses[v.name] = self.uses.get(v.name, 0) + 1
            for sub in n.subgraphs():
                for name in sub.free_names():
                    self.uses[name] = self.uses.get(name, 0) + 1
        for v in graph.outputs:
            self.uses[v.name] = self.uses.get(v.name, 0) + 1


def _match_value(p: Union[Pat, Var, Const, None], v: Optional[Value], idx: _Index, m: Match) -> bool:
    if p is None:
        return True
    if isinstance(p, Var):
        if v is None:
            return False
        prev = m.values.get(p.name)
        if prev is not None and prev is not v:
            return False
        m.values[p.name] = v
        return True
    if isinstance(p, Const):
        if v is None or v.const is None:
            return False
        m.values[p.name] = v
        return True
    if v is None or v.name not in idx.producer:
        return False
    node = idx.producer[v.name]
    # Inner nodes must be used only inside the pattern, so they can be removed.
    if (not idx.ignore_sharing and idx.uses.get(v.name, 0) != 1) or len(node.outputs) != 1:
        return False
    return _match_node(p, node, idx, m)


def _match_node(p: Pat, node: Node, idx: _Index, m: Match) -> bool:
    if node.op_type not in p.ops() or node.domain != p.domain:
        return False
    if len(node.inputs) < len(p.inputs) or (p.exact_arity and len(node.inputs) != len(p.inputs)):
        return False
    orders = [list(range(len(p.inputs)))]
    if p.commutative and len(p.inputs) == 2:
        orders.append([1, 0])
    for order in orders:
        trial = Match(m.root, dict(m.nodes), dict(m.values), list(m.matched))
        if all(_match_value(p.inputs[i], node.inputs[j], idx, trial) for i, j in zip(range(len(p.inputs)), order)):
            if p.name:
                trial.nodes[p.name] = node
            trial.matched.append(node)
            m.nodes, m.values, m.matched = trial.nodes, trial.values, trial.matched
            return True
    return False


def match(pattern: Pat, node: Node, graph: Graph) -> Optional[Match]:
    """The match of `pattern` rooted at `node`, or None (for tests and one-off queries)."""
    m = Match(node)
    return m if _match_node(pattern, node, _Index(graph), m) else None


def apply_rules(graph: Graph, rules: Sequence[Rule], ctx: PassContext) -> Graph:
    taken = graph.defined_names() | {n.name for n in graph.nodes}
    rewriter = Rewriter(graph, taken)
    declined: set[tuple[str, str]] = set()
    # A rule whose rewrite matches itself again would never stop; real graphs need far fewer.
    budget = 20 * len(graph.nodes) + 1000
    for _ in range(_MAX_ROUNDS):
        idx = _Index(graph)
        relaxed = _Index(graph, ignore_sharing=True)
        changed = False
        pos = 0
        while pos < len(graph.nodes):
            node = graph.nodes[pos]
            for rule in rules:
                # Match ignoring sharing, then require the match to be closed: every reader of a
                # value inside it is inside it too (a DAG pattern may read one value twice).
                m = Match(node)
                if not _match_node(rule.pattern, node, relaxed, m):
                    continue
                m.matched = list({id(n): n for n in m.matched}.values())  # a DAG matches a node twice
                shared = _read_outside(m, idx)
                if shared:
                    if (rule.name, node.name) not in declined:
                        declined.add((rule.name, node.name))
                        ctx.declined(rule.name, node.name, "; ".join(shared))
                    continue
                reason = rule.check(m)
                if reason:
                    if (rule.name, node.name) not in declined:
                        declined.add((rule.name, node.name))
                        ctx.declined(rule.name, node.name, reason)
                    continue
                replacement = rule.rewrite(m, rewriter)
                pos = _splice(graph, m.matched, replacement, pos)
                ctx.rewrote(rule.name, node.name, "+".join(n.op_type for n in m.matched) + " -> " +
                            "+".join(n.op_type for n in replacement))
                idx = _Index(graph)
                relaxed = _Index(graph, ignore_sharing=True)
                changed = True
                budget -= 1
                if budget <= 0:
                    raise RuntimeError(f"rule '{rule.name}' keeps rewriting its own result (at node '{node.name}')")
                break
            else:
                pos += 1
        if not changed:
            break
    return graph


def _read_outside(m: Match, idx: _Index) -> list[str]:
    """Values produced inside the match that something outside it reads (so the matched
    nodes cannot all be replaced), each with its reader count."""
    unique = {id(n): n for n in m.matched}
    inside: dict[str, int] = {}
    for n in unique.values():
        for v in n.inputs:
            if v is not None:
                inside[v.name] = inside.get(v.name, 0) + 1
    out = []
    for n in unique.values():
        if n is m.root:
            continue
        name = n.outputs[0].name
        if idx.uses.get(name, 0) != inside.get(name, 0):
            out.append(f"{n.op_type} '{n.name}' output '{name}' is read elsewhere ({idx.uses.get(name, 0)} readers)")
    return out


def _splice(graph: Graph, removed: list[Node], added: list[Node], root_pos: int) -> int:
    """Replace the matched nodes by `added` at the root's place; returns where `added` starts
    (the scan resumes there, so a rewrite's result can itself be matched)."""
    gone = {id(n) for n in removed}
    before = [n for n in graph.nodes[:root_pos] if id(n) not in gone]
    after = [n for n in graph.nodes[root_pos + 1:] if id(n) not in gone]
    graph.nodes = before + list(added) + after
    return len(before)
