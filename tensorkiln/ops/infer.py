"""Shape and dtype inference over a whole graph, op by op."""

from __future__ import annotations

from typing import Optional

from ..errors import ShapeError
from ..ir import Graph, Node, TensorType
from ..ir.shape import Dim
from .registry import InferContext, get_op


def _merge_dim(a: Dim, b: Dim) -> Dim:
    # Prefer the most specific: a number, then a name a person gave, then one a shape
    # inference invented ("unk__3"), then unknown.
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    if isinstance(a, str) and isinstance(b, str) and a.startswith("unk__") and not b.startswith("unk__"):
        return b
    return a if a is not None else b


def merge_types(inferred: Optional[TensorType], declared: Optional[TensorType]) -> Optional[TensorType]:
    if inferred is None:
        return declared
    if declared is None:
        return inferred
    if not isinstance(inferred, TensorType) or not isinstance(declared, TensorType):
        return declared if type(declared) is type(inferred) else inferred
    if declared.shape is None:
        shape = inferred.shape
    elif inferred.shape is None:
        shape = declared.shape
    elif len(inferred.shape) != len(declared.shape):
        shape = inferred.shape  # exporters' value_info is sometimes stale; the op's own rule wins
    else:
        shape = tuple(_merge_dim(a, b) for a, b in zip(inferred.shape, declared.shape))
    return TensorType(inferred.dtype, shape)


def infer_graph_types(graph: Graph, strict: bool = False) -> Graph:
    """Set the type of every node output in place (and in subgraphs). Returns the graph.

    Types already declared (from the model's value_info) are merged with inferred ones.
    With ``strict``, an inference error is raised as ShapeError naming the node;
    otherwise the output types are left unknown.
    """
    for node in graph.nodes:
        infer_node(node, strict)
    return graph


def infer_node(node: Node, strict: bool = False) -> None:
    """Set the types of one node's outputs from its inputs' types."""
    op = get_op(node.op_type, node.domain)
    if op is None:
        return
    ctx = InferContext(node=node, input_types=[None if v is None else v.type for v in node.inputs],
                       attrs=node.attrs, infer_subgraph=_infer_subgraph)
    try:
        types = op.infer(ctx)
    except ShapeError:
        raise
    except Exception as exc:  # noqa: BLE001 - an op's inference bug must not hide the node
        if strict:
            raise ShapeError(f"node '{node.name}' ({node.op_type}): {exc}") from exc
        types = [None] * len(node.outputs)
    for v, t in zip(node.outputs, types):
        v.type = merge_types(t, v.type)
    for sub in node.subgraphs():
        if all(v.type is not None for v in sub.outputs):
            continue
        infer_graph_types(sub, strict)


def _infer_subgraph(graph: Graph, input_types: list[Optional[TensorType]]) -> list[Optional[TensorType]]:
    for v, t in zip(graph.inputs, input_types):
        v.type = merge_types(t, v.type) if t is not None else v.type
    infer_graph_types(graph)
    return [v.type for v in graph.outputs]
