"""Rewrite rules as data: `Rule(name, pattern, check, rewrite)`.

A pattern is a tree of `Pat` (a node of some op whose inputs match sub-patterns),
`Var` (any value) and `Const` (a value known at build time), rooted at the last node:

    # Relu(Add(Conv(x, w), b)) -> FusedConv(x, w, b, activation=Relu)
    Pat("Relu", [Pat("Add", [Pat("Conv", [Var("x"), Const("w")], name="conv"), Const("b")], commutative=True)])

The engine only offers a match whose inner values (produced by matched nodes other than
the root) are read by nothing else, so the matched nodes can all be replaced. `check`
returns the reason a match must not be rewritten (reported), or None; `rewrite` returns
the replacement nodes, the last of which must produce the root's outputs (the same Value
objects, so tensor names survive fusion and a per-layer comparison can find them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ...ir import Graph, NameScope, Node, TensorType, Value


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Const:
    name: str


@dataclass(frozen=True)
class Pat:
    op: Union[str, tuple[str, ...]]
    inputs: Sequence[Union["Pat", Var, Const, None]] = ()
    name: str = ""
    # Binary ops whose two inputs may come in either order (Add, Mul).
    commutative: bool = False
    # When False, the node may have more inputs than the pattern lists (the rest are captured
    # positionally as "<name>.in<i>" only if the pattern has a name).
    exact_arity: bool = False
    domain: str = ""

    def ops(self) -> tuple[str, ...]:
        return (self.op,) if isinstance(self.op, str) else self.op


@dataclass
class Match:
    root: Node
    nodes: dict[str, Node] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)
    # Every matched node, producers first, root last.
    matched: list[Node] = field(default_factory=list)

    def const(self, name: str) -> np.ndarray:
        return self.values[name].const

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def value(self, name: str) -> Value:
        return self.values[name]


class Rewriter:
    """What a rewrite may create: values, constants and nodes with unique names."""

    def __init__(self, graph: Graph, taken: set[str]):
        self.graph = graph
        self._names = NameScope(taken)

    def unique(self, base: str) -> str:
        return self._names.unique(base)

    def value(self, base: str, type: Optional[TensorType] = None) -> Value:
        return Value(self.unique(base), type)

    def const(self, array: np.ndarray, base: str) -> Value:
        v = Value(self.unique(base), const=np.ascontiguousarray(array))
        self.graph.initializers.append(v)
        return v

    def node(self, op_type: str, inputs: Sequence[Optional[Value]], outputs: Sequence[Value],
             attrs: Optional[dict[str, Any]] = None, name: str = "", domain: str = "", opset: int = 0,
             like: Optional[Node] = None) -> Node:
        """A new node; `like` lends its opset (and name, if none is given)."""
        if like is not None:
            opset = opset or like.opset
            name = name or like.name
        return Node(op_type, list(inputs), list(outputs), dict(attrs or {}), name=self.unique(name or op_type),
                    domain=domain, opset=opset)


Check = Callable[[Match], Optional[str]]
Rewrite = Callable[[Match, Rewriter], list[Node]]


def _never(m: Match) -> Optional[str]:
    return None


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: Pat
    rewrite: Rewrite
    check: Check = _never
