import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import helper, numpy_helper

import tensorkiln
from tensorkiln.errors import GraphError, ModelLoadError, UnsupportedOpError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import DType

from models import elementwise_expected, elementwise_model


def test_types_and_symbolic_dims_imported():
    g = parse_onnx(elementwise_model())
    assert [v.name for v in g.inputs] == ["x", "y"]
    assert g.inputs[0].dtype is DType.FLOAT32 and g.inputs[0].shape == ("N", 4)
    assert g.outputs[0].shape == ("N", 4)
    assert [n.op_type for n in g.nodes] == ["Add", "Mul", "Relu"]
    assert g.initializers[0].name == "w" and g.initializers[0].const.shape == (4,)
    assert g.opsets[""] == 17


def test_every_unsupported_node_listed_in_one_error():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
    g (float[2] x) => (float[2] y) {
        a = com.example.Frobnicate <alpha: float = 1.0> (x)
        b = Relu(a)
        y = com.example.Twiddle(b)
    }""")
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(model)
    problems = err.value.problems
    assert [(p[1], p[2]) for p in problems] == [("Frobnicate", "com.example opset 1"), ("Twiddle", "com.example opset 1")]
    text = str(err.value)
    assert "2 unsupported node(s)" in text and "Frobnicate" in text and "Twiddle" in text


def test_truncated_model_file_refused(tmp_path):
    data = elementwise_model().SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="m.onnx"):
        parse_onnx(str(path))


def test_garbage_and_empty_files_refused(tmp_path):
    for name, data in [("garbage.onnx", b"\xff\xfe not a model at all"), ("empty.onnx", b"")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelLoadError, match=name):
            parse_onnx(str(path))


def test_missing_model_file_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        parse_onnx(str(tmp_path / "nope.onnx"))


def test_external_data_loaded_and_missing_external_file_named(tmp_path, rng):
    model = elementwise_model()
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    x = rng.standard_normal((2, 4)).astype(np.float32)
    out = tensorkiln.compile(str(path)).predict({"x": x, "y": x})["z"]
    np.testing.assert_allclose(out, elementwise_expected(x, x, elementwise_model()), rtol=1e-6)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="external data"):
        parse_onnx(str(path))


def test_constant_node_becomes_initializer():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x) => (float[3] y) {
        c = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
        y = Add(x, c)
    }""")
    g = parse_onnx(model)
    assert [n.op_type for n in g.nodes] == ["Add"]
    np.testing.assert_array_equal(g.initializers[0].const, [1, 2, 3])


def test_model_local_function_is_inlined():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
    g (float[3] x) => (float[3] y) {
        y = local.AddRelu(x, x)
    }
    <domain: "local", opset_import: ["" : 17]>
    AddRelu (a, b) => (c) {
        s = Add(a, b)
        c = Relu(s)
    }""")
    g = parse_onnx(model)
    assert [n.op_type for n in g.nodes] == ["Add", "Relu"]
    x = np.array([-1.0, 0.5, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(tensorkiln.compile(model).predict(x)["y"], np.maximum(2 * x, 0))


def test_undefined_input_reference_names_node():
    node = helper.make_node("Relu", ["ghost"], ["y"], name="r")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GraphError, match="node 'r' \\(Relu\\): input 'ghost' is not defined"):
        parse_onnx(model)


def test_initializer_listed_as_input_is_a_constant():
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2]),
                               helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=3)
    g = parse_onnx(model)
    assert [v.name for v in g.inputs] == ["x"]
