"""Intermediate representation: Graph, Node, Value, DType, symbolic shapes."""

from .dtype import HALF_FLOATS, DType, numpy_to_torch, torch_to_numpy
from .graph import Graph, Node, Value, free_names_of_subgraphs
from .names import NameScope
from .printer import format_graph, format_node
from .shape import (Dim, OptionalType, SequenceType, Shape, TensorType, ValueType, broadcast_shapes, format_shape,
                    is_static)
from .verify import verify

__all__ = ["DType", "HALF_FLOATS", "Dim", "Graph", "NameScope", "Node", "OptionalType", "SequenceType", "Shape", "TensorType", "Value", "ValueType", "broadcast_shapes",
           "format_graph", "format_node", "format_shape", "free_names_of_subgraphs", "is_static",
           "numpy_to_torch", "torch_to_numpy", "verify"]
