"""ONNX protos -> IR pieces: tensors, types, attributes."""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import onnx
from onnx import numpy_helper

from ...ir import DType, Graph, OptionalType, SequenceType, TensorType, ValueType
from ...ir.shape import Dim


def tensor_to_array(tensor: onnx.TensorProto) -> np.ndarray:
    array = numpy_helper.to_array(tensor)
    if tensor.data_type == onnx.TensorProto.STRING:
        return np.asarray(array, dtype=object)
    return array


def type_from_proto(tp: onnx.TypeProto) -> Optional[ValueType]:
    if tp.HasField("sequence_type"):
        elem = type_from_proto(tp.sequence_type.elem_type)
        return SequenceType(elem if isinstance(elem, TensorType) else None)
    if tp.HasField("optional_type"):
        elem = type_from_proto(tp.optional_type.elem_type)
        return OptionalType(elem if isinstance(elem, (TensorType, SequenceType)) else None)
    if not tp.HasField("tensor_type"):
        return None
    tt = tp.tensor_type
    if tt.elem_type == 0:
        return None
    try:
        dtype = DType(tt.elem_type)
    except ValueError:
        return None
    shape: Optional[tuple[Dim, ...]] = None
    if tt.HasField("shape"):
        dims: list[Dim] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorType(dtype, shape)


def attribute_value(attr: onnx.AttributeProto, convert_graph: Callable[[onnx.GraphProto], Graph]) -> Any:
    A = onnx.AttributeProto
    if attr.type == A.FLOAT:
        return float(attr.f)
    if attr.type == A.INT:
        return int(attr.i)
    if attr.type == A.STRING:
        return attr.s.decode("utf-8", errors="surrogateescape")
    if attr.type == A.TENSOR:
        return tensor_to_array(attr.t)
    if attr.type == A.GRAPH:
        return convert_graph(attr.g)
    if attr.type == A.FLOATS:
        return [float(x) for x in attr.floats]
    if attr.type == A.INTS:
        return [int(x) for x in attr.ints]
    if attr.type == A.STRINGS:
        return [s.decode("utf-8", errors="surrogateescape") for s in attr.strings]
    if attr.type == A.TENSORS:
        return [tensor_to_array(t) for t in attr.tensors]
    if attr.type == A.GRAPHS:
        return [convert_graph(g) for g in attr.graphs]
    if attr.type == A.SPARSE_TENSOR:
        return sparse_to_dense(attr.sparse_tensor)
    if attr.type == A.TYPE_PROTO:
        return type_from_proto(attr.tp)
    raise ValueError(f"attribute '{attr.name}' has unsupported type {attr.type}")


def sparse_to_dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = tensor_to_array(sparse.values)
    indices = tensor_to_array(sparse.indices).astype(np.int64)
    dims = tuple(sparse.dims)
    dense = np.zeros(dims, dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense
