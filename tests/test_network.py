import numpy as np
import pytest

import tensorkiln
from tensorkiln import DType, NetworkDefinition
from tensorkiln.errors import GraphError, UnsupportedOpError


def test_network_api_builds_same_ir_as_onnx_and_runs(rng):
    net = NetworkDefinition("hand")
    x = net.add_input("x", DType.FLOAT32, ("N", 4))
    w = rng.standard_normal(4).astype(np.float32)
    y = net.add_elementwise(x, w, "mul")
    y = net.add_activation(y, "relu")
    net.mark_output(y, "out")
    assert [n.op_type for n in net.graph.nodes] == ["Mul", "Relu", "Identity"] or \
        [n.op_type for n in net.graph.nodes][:2] == ["Mul", "Relu"]
    assert net.graph.nodes[0].outputs[0].shape == ("N", 4)
    data = rng.standard_normal((3, 4)).astype(np.float32)
    out = tensorkiln.compile(net).predict({"x": data})
    np.testing.assert_allclose(out["out"], np.maximum(data * w, 0), rtol=1e-6)


def test_network_errors_name_the_problem():
    net = NetworkDefinition()
    x = net.add_input("x", "float32", (2,))
    with pytest.raises(GraphError, match="unknown activation 'swoosh'"):
        net.add_activation(x, "swoosh")
    with pytest.raises(UnsupportedOpError, match="NoSuchOp"):
        net.add_layer("NoSuchOp", [x])
    with pytest.raises(GraphError, match="already has a tensor named 'x'"):
        net.add_input("x", "float32", (2,))
    with pytest.raises(GraphError, match="has no outputs"):
        net.validate()
