import numpy as np
import pytest
import torch

from tensorkiln.errors import GraphError
from tensorkiln.ir import (DType, Graph, Node, TensorType, Value, broadcast_shapes, format_graph, numpy_to_torch,
                           torch_to_numpy, verify)


def _graph():
    x = Value("x", TensorType(DType.FLOAT32, ("N", 4)))
    t = Value("t", TensorType(DType.FLOAT32, ("N", 4)))
    y = Value("y", TensorType(DType.FLOAT32, ("N", 4)))
    nodes = [Node("Relu", [x], [t], name="relu"), Node("Neg", [t], [y], name="neg")]
    return Graph("g", [x], [y], nodes), x, t, y


def test_verify_accepts_valid_graph():
    g, *_ = _graph()
    verify(g)


def test_verify_names_node_reading_undefined_value():
    g, x, t, y = _graph()
    g.nodes.reverse()
    with pytest.raises(GraphError, match=r"node 'neg' \(Neg\): input 0 't' is not defined before use"):
        verify(g)


def test_verify_names_duplicate_output():
    g, x, t, y = _graph()
    g.nodes[1].outputs = [t]
    with pytest.raises(GraphError, match="node 'neg'.*'t' is already defined"):
        verify(g)


def test_verify_reports_output_never_produced():
    g, *_ = _graph()
    g.outputs.append(Value("ghost"))
    with pytest.raises(GraphError, match="output 'ghost' is never produced"):
        verify(g)


def test_verify_check_node_callback_reason():
    g, *_ = _graph()
    with pytest.raises(GraphError, match="node 'relu'.*nope"):
        verify(g, check_node=lambda n: "nope" if n.op_type == "Relu" else None)


def test_printer_shows_ops_and_symbolic_dims():
    g, *_ = _graph()
    text = format_graph(g)
    assert "Relu(%x)" in text and "float32[N,4]" in text and "graph g(" in text


def test_broadcast_symbolic():
    assert broadcast_shapes(("N", 1, 4), (3, 1)) == ("N", 3, 4)
    assert broadcast_shapes(("N", 4), ("N", 4)) == ("N", 4)
    assert broadcast_shapes(("N",), ("M",)) == (None,)
    assert broadcast_shapes(None, (1,)) is None
    with pytest.raises(ValueError):
        broadcast_shapes((3,), (4,))


@pytest.mark.parametrize("dtype", [DType.BFLOAT16, DType.FLOAT8E4M3FN, DType.FLOAT16, DType.UINT32, DType.BOOL])
def test_numpy_torch_roundtrip_bit_exact(dtype):
    a = np.arange(-3, 5).astype(np.float32)
    if dtype == DType.BOOL:
        a = a > 0
    arr = a.astype(dtype.numpy)
    t = numpy_to_torch(arr)
    assert t.dtype == dtype.torch
    back = torch_to_numpy(t)
    assert back.dtype == arr.dtype and back.tobytes() == arr.tobytes()


def test_zero_dim_array_keeps_rank():
    assert numpy_to_torch(np.array(2.0, dtype=np.float32)).shape == torch.Size([])


def test_dtype_parse_and_names():
    assert DType.parse("fp16") is DType.FLOAT16
    assert DType.parse("float32") is DType.FLOAT32
    with pytest.raises(ValueError):
        DType.parse("float13")
