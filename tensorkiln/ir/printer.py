"""A readable text form of a Graph, for `kiln inspect` and debug dumps."""

from __future__ import annotations

from typing import Any

import numpy as np

from .graph import Graph, Node, Value


def _value(v: Value | None) -> str:
    if v is None:
        return "_"
    if v.is_const:
        return f"{v.name}<const {v.type}>" if v.const.size > 8 else f"{v.name}={v.const.tolist()}"
    return f"%{v.name}"


def _attr(value: Any) -> str:
    if isinstance(value, Graph):
        return f"<graph {value.name}>"
    if isinstance(value, np.ndarray):
        return f"<tensor {value.dtype}{list(value.shape)}>"
    if isinstance(value, list) and value and isinstance(value[0], Graph):
        return "[" + ", ".join(f"<graph {g.name}>" for g in value) + "]"
    return repr(value)


def format_node(node: Node) -> str:
    outs = ", ".join(f"%{v.name}: {v.type}" for v in node.outputs)
    args = ", ".join(_value(v) for v in node.inputs)
    attrs = ", ".join(f"{k}={_attr(v)}" for k, v in node.attrs.items())
    op = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
    text = f"{outs} = {op}({args})"
    if attrs:
        text += f" {{{attrs}}}"
    if node.name:
        text += f"  # {node.name}"
    return text


def format_graph(graph: Graph, indent: str = "") -> str:
    ins = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    outs = ", ".join(f"%{v.name}: {v.type}" for v in graph.outputs)
    lines = [f"{indent}graph {graph.name}({ins}) -> ({outs}) {{"]
    if graph.initializers:
        lines.append(f"{indent}  # {len(graph.initializers)} constants, "
                     f"{sum(v.const.nbytes for v in graph.initializers)} bytes")
    for node in graph.nodes:
        lines.append(indent + "  " + format_node(node))
        for sub in node.subgraphs():
            lines.append(format_graph(sub, indent + "    "))
    lines.append(indent + "}")
    return "\n".join(lines)
