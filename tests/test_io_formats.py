"""I/O formats (trtexec's --inputIOFormats / --outputIOFormats; BuilderConfig.input_formats /
output_formats): the dtype an engine takes its inputs in and gives its outputs in."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from tensorkiln.builder import Builder, BuilderConfig
from tensorkiln.cli.io_formats import parse_io_formats
from tensorkiln.cli.main import main
from tensorkiln.engine import EnginePlan, deserialize_plan, load_plan
from tensorkiln.errors import ConfigError, ShapeError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import DType
from tensorkiln.runtime import Runtime
from tensorkiln.testing.tolerances import assert_close

# Two float inputs (one feeding an fp32-only reduction and a matmul), an integer input passed
# through, an output that other layers also read, and a constant output.
MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,8] x, float[N,4] r, int64[N] ids) => (float[N,4] y, float[N,4] h, float[N] total, int64[N] ids_out,
                                                 float[2] k) {
    h = MatMul(x, w)
    y = Add(h, r)
    total = ReduceSum <keepdims = 0> (h, axes)
    ids_out = Identity(ids)
    k = Identity(kc)
}
"""


def _model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(MODEL)
    rng = np.random.default_rng(0)
    model.graph.initializer.extend([
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, (8, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array([0.25, -3.0], dtype=np.float32), "kc"),
    ])
    return model


def _feeds(dtype: type = np.float16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": rng.uniform(-1, 1, (3, 8)).astype(dtype), "r": rng.uniform(-1, 1, (3, 4)).astype(dtype),
            "ids": np.array([4, 0, 7], dtype=np.int64)}


def _reference(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float32 model on the inputs as the engine received them (fp16 values widened exactly)."""
    wide = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    names = [o.name for o in _model().graph.output]
    return dict(zip(names, ReferenceEvaluator(_model()).run(None, wide)))


def _build(**config) -> EnginePlan:
    return Builder(BuilderConfig(**config)).build(parse_onnx(_model()))


def _io(plan: EnginePlan) -> dict[str, str]:
    return {v.name: v.dtype.short for v in [*plan.graph.inputs, *plan.graph.outputs]}


def _run(plan: EnginePlan, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return Runtime("cpu").load(plan).create_execution_context().execute(feeds)


FP16_IO = dict(input_formats={"x": "fp16", "r": "fp16"},
               output_formats={"y": "fp16", "h": "fp16", "total": "fp16", "k": "fp16"})


def test_fp16_engine_with_fp16_io_converts_nothing_at_its_boundary():
    plan = _build(fp16=True, **FP16_IO)
    assert _io(plan) == {"x": "float16", "r": "float16", "ids": "int64", "y": "float16", "h": "float16",
                         "total": "float16", "ids_out": "int64", "k": "float16"}
    casts = [n for n in plan.graph.nodes if n.op_type == "Cast"]
    # Only the reduction (kept fp32 by the precision policy) reads a widened copy and gives a
    # narrowed result; the fp16 layers read the inputs and write the outputs as they are.
    assert [(n.inputs[0].dtype, n.outputs[0].dtype) for n in casts] == [(DType.FLOAT16, DType.FLOAT32),
                                                                       (DType.FLOAT32, DType.FLOAT16)]
    matmul = next(n for n in plan.graph.nodes if n.op_type == "MatMul")
    assert matmul.inputs[0].name == "x" and matmul.outputs[0].name == "h"
    feeds = _feeds()
    out = _run(plan, feeds)
    ref = _reference(feeds)
    for name in ("y", "h", "total", "k"):
        assert out[name].dtype == np.float16
        assert_close(out[name].astype(np.float32), ref[name], "fp16", name)
    np.testing.assert_array_equal(out["ids_out"], feeds["ids"])


def test_fp32_engine_with_fp16_inputs_widens_once_and_narrows_its_outputs():
    plan = _build(input_formats={"x": "fp16"}, output_formats={"y": "fp16", "total": "bf16"})
    assert _io(plan)["x"] == "float16" and _io(plan)["r"] == "float32"
    assert _io(plan)["y"] == "float16" and _io(plan)["total"] == "bfloat16" and _io(plan)["h"] == "float32"
    widen = [n for n in plan.graph.nodes if n.op_type == "Cast" and n.inputs[0].name == "x"]
    assert len(widen) == 1 and widen[0].outputs[0].dtype == DType.FLOAT32
    feeds = _feeds()
    feeds["r"] = feeds["r"].astype(np.float32)
    out = _run(plan, feeds)
    ref = _reference(feeds)
    assert out["y"].dtype == np.float16 and str(out["total"].dtype) == "bfloat16"
    assert_close(out["y"].astype(np.float32), ref["y"], "fp16", "y")
    assert_close(out["total"].astype(np.float32), ref["total"], "bf16", "total")
    assert_close(out["h"], ref["h"], "fp32", "h")


def test_bf16_output_of_an_fp16_layer_converts_from_the_float32_version():
    plan = _build(fp16=True, output_formats={"h": "bf16"})
    final = next(n for n in plan.graph.nodes if n.outputs[0].name == "h")
    assert final.op_type == "Cast" and final.outputs[0].dtype == DType.BFLOAT16
    assert final.inputs[0].dtype == DType.FLOAT32  # fp16 -> fp32 (exact) -> bf16: one rounding
    feeds = _feeds(np.float32)
    out = _run(plan, feeds)
    assert_close(out["h"].astype(np.float32), _reference(feeds)["h"], "bf16", "h")


def test_engine_refuses_inputs_not_in_their_format_and_the_plan_keeps_the_formats():
    plan = _build(fp16=True, **FP16_IO)
    loaded = deserialize_plan(plan.serialize())
    assert _io(loaded) == _io(plan)
    with pytest.raises(ShapeError, match="input 'x' must be float16, got float32"):
        _run(loaded, _feeds(np.float32))


def test_a_format_naming_the_declared_type_changes_nothing():
    plan = _build(input_formats={"x": "fp32", "ids": "int64"}, output_formats={"ids_out": "int64"})
    assert _io(plan) == _io(_build())


@pytest.mark.parametrize("config, message", [
    (dict(input_formats={"nope": "fp16"}), "'nope', which is not an input of the network; its inputs are"),
    (dict(output_formats={"x": "fp16"}), "'x', which is not an output"),
    (dict(input_formats={"ids": "int32"}), "input 'ids' cannot take the format int32: it is declared int64"),
    (dict(output_formats={"y": "int8"}), "int8 bindings need a quantization scale"),
    (dict(output_formats={"y": "float64"}), "narrow a float32 tensor to float16 or bfloat16"),
    (dict(input_formats={"x": "fp99"}), "unknown type 'fp99'"),
])
def test_impossible_formats_are_config_errors_naming_the_tensor(config, message):
    with pytest.raises(ConfigError, match=message):
        _build(**config)


def test_a_tensor_that_is_input_and_output_needs_one_format():
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] x, float[2] y) { y = Neg(x) }""")
    with pytest.raises(ConfigError, match="'x' is both an input and an output"):
        Builder(BuilderConfig(input_formats={"x": "fp16"})).build(parse_onnx(model))
    plan = Builder(BuilderConfig(input_formats={"x": "fp16"}, output_formats={"x": "fp16"})).build(parse_onnx(model))
    out = _run(plan, {"x": np.array([1.5, -2], dtype=np.float16)})
    assert out["x"].dtype == np.float16 and out["y"].dtype == np.float32


def test_a_tensor_read_inside_a_control_flow_body_keeps_its_dtype():
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (bool c, float[2] x) => (float[2] y) {
            y = If (c) <then_branch = t () => (float[2] a) { a = Neg(x) },
                        else_branch = e () => (float[2] b) { b = Identity(x) }>
        }""")
    with pytest.raises(ConfigError, match="input 'x' is read inside a control-flow body"):
        Builder(BuilderConfig(input_formats={"x": "fp16"})).build(parse_onnx(model))


def test_an_input_the_optimizer_removes_may_still_name_a_format():
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, float[2] unused) => (float[2] y) { y = Neg(x) }""")
    plan = Builder(BuilderConfig(input_formats={"x": "fp16", "unused": "fp16"})).build(parse_onnx(model))
    assert [v.name for v in plan.graph.inputs] == ["x"] and plan.graph.inputs[0].dtype == DType.FLOAT16


def test_parse_io_formats_reads_trtexec_specs():
    graph = parse_onnx(_model())
    assert parse_io_formats(None, graph.inputs, "--inputIOFormats") == {}
    # One float spec: every float32 tensor; the int64 one keeps its type.
    assert parse_io_formats("fp16:chw", graph.inputs, "--inputIOFormats") == {"x": "fp16", "r": "fp16"}
    assert parse_io_formats("fp16", graph.inputs, "--inputIOFormats") == {"x": "fp16", "r": "fp16"}
    assert parse_io_formats("fp16:chw,fp32:linear,int64:chw", graph.inputs, "--inputIOFormats") == \
        {"x": "fp16", "r": "fp32", "ids": "int64"}
    fp16_model = parse_onnx(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float16[2] a, int64[2] b) => (float16[2] c) { c = Neg(a) }"""))
    # Every float tensor (here an fp16 one), so the builder can say why fp32 is refused.
    assert parse_io_formats("fp32:chw", fp16_model.inputs, "--inputIOFormats") == {"a": "fp32"}
    with pytest.raises(ConfigError, match="input 'a' cannot take the format float32: it is declared float16"):
        Builder(BuilderConfig(input_formats={"a": "fp32"})).build(fp16_model)
    assert parse_io_formats("int64:chw", graph.inputs, "--inputIOFormats") == \
        {"x": "int64", "r": "int64", "ids": "int64"}
    with pytest.raises(ConfigError, match="gives 2 specs for 3 tensors"):
        parse_io_formats("fp16:chw,fp16:chw", graph.inputs, "--inputIOFormats")
    with pytest.raises(ConfigError, match="format 'hwc8' in 'fp16:hwc8' is not supported"):
        parse_io_formats("fp16:hwc8", graph.inputs, "--inputIOFormats")
    with pytest.raises(ConfigError, match="empty spec"):
        parse_io_formats("fp16:chw,", graph.inputs, "--inputIOFormats")


def _kiln(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out, err=out)
    return code, out.getvalue()


def test_kiln_exec_builds_and_runs_with_io_formats(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(_model(), model)
    feeds = _feeds()
    np.save(tmp_path / "x.npy", feeds["x"])
    exported = tmp_path / "out.json"
    code, text = _kiln("exec", f"--onnx={model}", "--fp16", "--inputIOFormats=fp16:chw",
                       "--outputIOFormats=fp16:chw", f"--loadInputs=x:{tmp_path / 'x.npy'}", "--shapes=x:3x8,r:3x4,ids:3",
                       "--iterations=2", "--duration=0", "--warmUp=0", f"--exportOutput={exported}",
                       f"--saveEngine={tmp_path / 'm.plan'}")
    assert code == 0, text
    assert "Input(s) format: fp16:chw" in text and "input tensor x to: 3x8 (float16, from file)" in text
    assert "input tensor r to: 3x4 (float16, random)" in text
    plan = load_plan(tmp_path / "m.plan")
    assert _io(plan)["y"] == "float16" and _io(plan)["ids_out"] == "int64"
    assert {o["name"] for o in json.loads(exported.read_text())} == {"y", "h", "total", "ids_out", "k"}
    np.save(tmp_path / "x32.npy", feeds["x"].astype(np.float32))
    code, text = _kiln("exec", f"--onnx={model}", "--inputIOFormats=fp16:chw", f"--loadInputs=x:{tmp_path / 'x32.npy'}")
    assert code != 0 and "input 'x' from" in text and "is float32, but the engine input is float16" in text
    code, text = _kiln("exec", f"--loadEngine={tmp_path / 'm.plan'}", "--outputIOFormats=fp32:chw",
                       "--shapes=x:3x8,r:3x4,ids:3", "--iterations=1", "--duration=0", "--warmUp=0")
    assert code == 0 and "--outputIOFormats only affects building; ignored with --loadEngine" in text


def test_kiln_build_takes_io_formats(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(_model(), model)
    code, text = _kiln("build", str(model), "-o", str(tmp_path / "m.plan"), "--input-io-formats", "fp16:chw",
                       "--output-io-formats", "bf16:chw,bf16:chw,fp32:chw,int64:chw,fp16:chw")
    assert code == 0, text
    plan = load_plan(tmp_path / "m.plan")
    assert _io(plan) == {"x": "float16", "r": "float16", "ids": "int64", "y": "bfloat16", "h": "bfloat16",
                         "total": "float32", "ids_out": "int64", "k": "float16"}
    code, text = _kiln("build", str(model), "-o", str(tmp_path / "bad.plan"), "--output-io-formats", "fp16:hwc")
    assert code != 0 and "format 'hwc' in 'fp16:hwc' is not supported" in text
    assert not (tmp_path / "bad.plan").exists()
