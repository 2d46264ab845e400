"""The intermediate representation: a Graph of Nodes connected by Values.

Values are SSA: each is produced once (by a node, or as a graph input, or as a constant
with ``const`` data). Node attributes are plain Python data: int, float, str, bytes,
lists of those, numpy arrays (tensor attributes), Graphs (subgraphs of If/Loop/Scan),
lists of Graphs, or TensorType.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np

from .dtype import DType
from .shape import Shape, TensorType


class Value:
    __slots__ = ("name", "type", "const")

    def __init__(self, name: str, type: Optional[TensorType] = None, const: Optional[np.ndarray] = None):
        self.name = name
        self.type = type
        self.const = const
        if const is not None and type is None:
            self.type = TensorType(DType.from_numpy(const.dtype), tuple(const.shape))

    @property
    def dtype(self) -> Optional[DType]:
        return self.type.dtype if isinstance(self.type, TensorType) else None

    @property
    def shape(self) -> Shape:
        return self.type.shape if isinstance(self.type, TensorType) else None

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.type})"


@dataclass(eq=False)
class Node:
    op_type: str
    inputs: list[Optional[Value]]
    outputs: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    opset: int = 0
    # Builder annotations (chosen tactic, precision, fused-from list); empty before building.
    meta: dict[str, Any] = field(default_factory=dict)

    def subgraphs(self) -> Iterator["Graph"]:
        for v in self.attrs.values():
            if isinstance(v, Graph):
                yield v
            elif isinstance(v, list) and v and isinstance(v[0], Graph):
                yield from v

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op_type})"


@dataclass(eq=False)
class Graph:
    name: str = "main"
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    # Constant values (weights); each has ``const`` set.
    initializers: list[Value] = field(default_factory=list)
    # domain -> opset version; only meaningful on the top-level graph.
    opsets: dict[str, int] = field(default_factory=dict)
    doc: str = ""

    def producers(self) -> dict[str, Node]:
        return {v.name: n for n in self.nodes for v in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    out.setdefault(v.name, []).append(n)
            for name in free_names_of_subgraphs(n):
                out.setdefault(name, []).append(n)
        return out

    def walk(self) -> Iterator[Node]:
        """Every node, including those inside subgraphs (depth first)."""
        for n in self.nodes:
            yield n
            for g in n.subgraphs():
                yield from g.walk()

    def defined_names(self) -> set[str]:
        names = {v.name for v in self.inputs}
        names.update(v.name for v in self.initializers)
        for n in self.nodes:
            names.update(v.name for v in n.outputs)
        return names

    def free_names(self) -> set[str]:
        """Names this graph reads but does not define: captured from an enclosing graph."""
        defined = self.defined_names()
        used: set[str] = set()
        for n in self.nodes:
            used.update(v.name for v in n.inputs if v is not None)
            used.update(free_names_of_subgraphs(n))
        used.update(v.name for v in self.outputs)
        return used - defined


def free_names_of_subgraphs(node: Node) -> set[str]:
    names: set[str] = set()
    for g in node.subgraphs():
        names |= g.free_names()
    return names
