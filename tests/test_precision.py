"""Per-layer precision (fp16/bf16 layers, Cast "reformat" layers, the FP32 policy,
--layerPrecisions/--precisionConstraints) and the precision bisect (`kiln debug precision`).

Structural tests build at optimization level 0 so that the layers are the model's own
nodes (named as the importer names them) whatever fusions the default pipeline gains.
"""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

from tensorkiln.builder import Builder, BuilderConfig
from tensorkiln.cli.main import main
from tensorkiln.debug.bisect import bisect_precision, format_layer_precisions, minimal_passing_set
from tensorkiln.debug.compare import Thresholds
from tensorkiln.errors import BuildError, ConfigError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import DType, verify
from tensorkiln.precision import low_precision_blocker, sensitivity_reason
from tensorkiln.runtime import Runtime
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close, tolerance_for


def _model(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for name, array in weights.items():
        model.graph.initializer.append(numpy_helper.from_array(array, name))
    return model


def _build(model: onnx.ModelProto, **config) -> "EnginePlan":  # noqa: F821
    config.setdefault("optimization_level", 0)
    return Builder(BuilderConfig(**config)).build(parse_onnx(model))


def _run(plan, feeds: dict) -> dict:
    return Runtime("cpu").load(plan).create_execution_context().execute(feeds)


def _precisions(plan) -> dict[str, str]:
    return {n.name: n.meta["precision"] for n in plan.graph.nodes if not n.meta.get("reformat")}


def _casts(plan) -> list:
    return [n for n in plan.graph.nodes if n.op_type == "Cast"]


# An MLP that is fine in fp16: weights and activations of order 1.
MLP = """
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[N,16] x) => (float[N,8] y) {
    h = MatMul(x, w1)
    hb = Add(h, b1)
    a = Relu(hb)
    o = MatMul(a, w2)
    y = Add(o, b2)
}
"""


def mlp_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    return _model(MLP, w1=(rng.standard_normal((16, 32)) / 4).astype(np.float32),
                  b1=rng.standard_normal(32).astype(np.float32) / 4,
                  w2=(rng.standard_normal((32, 8)) / 6).astype(np.float32),
                  b2=rng.standard_normal(8).astype(np.float32) / 4)


# A tensor that overflows fp16 (~1e5 > 65504) on inputs of ~100, brought back by a division.
OVERFLOW = """
<ir_version: 8, opset_import: ["" : 17]>
overflow (float[4,8] x) => (float[4,8] y) {
    a = Mul(x, two)
    big = Mul(a, k)
    back = Div(big, k)
    r = Relu(back)
    y = Add(r, x)
}
"""


def overflow_model() -> onnx.ModelProto:
    return _model(OVERFLOW, two=np.array(2.0, np.float32), k=np.array(1000.0, np.float32))


def inputs_of_100(seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).uniform(50, 150, (4, 8)).astype(np.float32)}


# ---- assignment and Cast layers -----------------------------------------------------------

def test_fp32_build_has_no_casts_and_all_layers_fp32():
    plan = _build(mlp_model())
    assert _casts(plan) == []
    assert set(_precisions(plan).values()) == {"fp32"}
    assert all(v.const.dtype == np.float32 for v in plan.graph.initializers)


def test_fp16_layers_casts_and_converted_weights():
    plan = _build(mlp_model(), fp16=True)
    verify(plan.graph)
    assert _precisions(plan) == {"MatMul_0": "fp16", "Add_1": "fp16", "Relu_2": "fp16", "MatMul_3": "fp16",
                                 "Add_4": "fp16"}
    # One Cast for the input going down, one for the output coming back; none for weights.
    casts = _casts(plan)
    assert [(c.inputs[0].name, c.outputs[0].name, DType(c.attrs["to"])) for c in casts] == [
        ("x", "x_fp16", DType.FLOAT16), ("y_fp16", "y", DType.FLOAT32)]
    assert [n.op_type for n in plan.graph.nodes] == ["Cast", "MatMul", "Add", "Relu", "MatMul", "Add", "Cast"]
    # Weights are converted at build time; the fp32 originals are not kept in the plan.
    assert sorted((v.name, v.const.dtype) for v in plan.graph.initializers) == [
        ("b1_fp16", np.float16), ("b2_fp16", np.float16), ("w1_fp16", np.float16), ("w2_fp16", np.float16)]
    # Graph I/O keep their declared dtypes.
    assert [v.dtype for v in plan.graph.inputs + plan.graph.outputs] == [DType.FLOAT32, DType.FLOAT32]
    info = plan.build_info["precision"]
    assert info["counts"] == {"fp16": 5} and info["reformat_layers"] == 2 and info["converted_weights"] == 4


def test_fp16_engine_matches_fp32_and_onnxruntime_at_fp16_tolerance(rng):
    model = mlp_model()
    feeds = {"x": rng.uniform(-1, 1, (3, 16)).astype(np.float32)}
    fp16 = _run(_build(model, fp16=True), feeds)["y"]
    fp32 = _run(_build(model), feeds)["y"]
    assert fp16.dtype == np.float32
    assert not np.array_equal(fp16, fp32)  # it really computed in fp16
    assert_close(fp16, fp32, "fp16")
    assert_close(fp16, run_onnxruntime(model, feeds)["y"], "fp16")
    with pytest.raises(AssertionError):  # and fp16 is not within the fp32 tolerance
        assert_close(fp16, fp32, "fp32")


def test_layer_precisions_prefer_mixes_and_counts_casts():
    plan = _build(mlp_model(), fp16=True, layer_precisions={"Relu_2": "fp32", "MatMul_3": "fp32"},
                  precision_constraints="prefer")
    verify(plan.graph)
    assert _precisions(plan) == {"MatMul_0": "fp16", "Add_1": "fp16", "Relu_2": "fp32", "MatMul_3": "fp32",
                                 "Add_4": "fp16"}
    casts = [(c.inputs[0].name, DType(c.attrs["to"]).short) for c in _casts(plan)]
    # x down, hb up (Relu_2 in fp32), o down (Add_4 in fp16), y up.
    assert casts == [("x", "float16"), ("hb", "float32"), ("o", "float16"), ("y_fp16", "float32")]
    by_name = {n.name: n for n in plan.graph.nodes}
    assert by_name["MatMul_3"].inputs[1].const.dtype == np.float32  # w2 stays fp32 for the fp32 layer
    assert by_name["Relu_2"].meta["precision_reason"] == "layer_precisions asks for fp32 ('Relu_2:fp32')"
    assert plan.build_info["precision"]["kept_fp32"] == {
        "Relu_2": "layer_precisions asks for fp32 ('Relu_2:fp32')",
        "MatMul_3": "layer_precisions asks for fp32 ('MatMul_3:fp32')"}


def test_layer_precisions_without_fp16_flag_wildcards_and_order():
    # '*:fp16' then 'Add_4:fp32': later entries override earlier ones; a requested precision
    # needs no --fp16.
    plan = _build(mlp_model(), layer_precisions={"*": "fp16", "Add_4": "fp32"}, precision_constraints="obey")
    assert _precisions(plan) == {"MatMul_0": "fp16", "Add_1": "fp16", "Relu_2": "fp16", "MatMul_3": "fp16",
                                 "Add_4": "fp32"}
    plan = _build(mlp_model(), fp16=True, layer_precisions={"Add_*": "fp32"}, precision_constraints="prefer")
    assert _precisions(plan) == {"MatMul_0": "fp16", "Add_1": "fp32", "Relu_2": "fp16", "MatMul_3": "fp16",
                                 "Add_4": "fp32"}


def test_graph_output_read_inside_keeps_its_dtype_and_integers_are_never_cast(rng):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,6] x, int64[3] idx) => (float[2,6] h, float[2,3] z, int64[2] s) {
        h = Relu(x)
        t = Mul(h, h)
        g = Gather<axis = 1>(t, idx)
        s = Shape(g)
        z = Tanh(g)
    }
    """
    model = _model(text)
    plan = _build(model, fp16=True)
    verify(plan.graph)
    # h is a graph output and is also read by Mul: the fp16 Relu writes h_fp16, a Cast gives h.
    casts = [(c.inputs[0].name, c.outputs[0].name) for c in _casts(plan)]
    assert casts == [("x", "x_fp16"), ("h_fp16", "h"), ("z_fp16", "z")]
    by_name = {n.name: n for n in plan.graph.nodes}
    assert by_name["Mul_1"].inputs[0].name == "h_fp16"
    # Gather's indices stay int64; Shape reads the fp16 tensor as it is (no Cast for it).
    assert by_name["Gather_2"].inputs[1].dtype == DType.INT64
    assert by_name["Shape_3"].inputs[0].dtype == DType.FLOAT16 and by_name["Shape_3"].meta["precision"] == "fp16"
    assert [v.dtype for v in plan.graph.outputs] == [DType.FLOAT32, DType.FLOAT32, DType.INT64]
    feeds = {"x": rng.uniform(-1, 1, (2, 6)).astype(np.float32), "idx": np.array([0, 5, 2], np.int64)}
    got = _run(plan, feeds)
    expected = run_onnxruntime(model, feeds)
    for name in ("h", "z", "s"):
        assert got[name].dtype == expected[name].dtype
        assert_close(got[name], expected[name], "fp16", what=name)


def test_value_captured_by_a_subgraph_keeps_its_dtype(rng):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x, bool c) => (float[4] y) {
        h = Relu(x)
        y = If(c) <then_branch = then_g () => (float[4] t) { t = Neg(h) },
                   else_branch = else_g () => (float[4] e) { e = Identity(h) }>
    }
    """
    model = _model(text)
    plan = _build(model, fp16=True)
    verify(plan.graph)
    if_node = next(n for n in plan.graph.nodes if n.op_type == "If")
    assert if_node.meta["precision"] == "fp32"  # its body's layers are not lowered
    assert all(n.meta["precision"] == "fp32" for g in if_node.subgraphs() for n in g.nodes)
    h = next(v for n in plan.graph.nodes for v in n.outputs if v.name == "h")
    assert h.dtype == DType.FLOAT32  # produced by the Cast back from the fp16 Relu
    x = rng.uniform(-1, 1, 4).astype(np.float32)
    for c in (True, False):
        got = _run(plan, {"x": x, "c": np.array(c)})["y"]
        assert_close(got, -np.maximum(x, 0) if c else np.maximum(x, 0), "fp16")


def test_sequence_outputs_are_not_lowered(rng):
    model = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y) { r = Relu(x) s = SequenceConstruct(r, r) y = SequenceAt(s, zero) }""",
                   zero=np.array(0, np.int64))
    plan = _build(model, fp16=True)
    precisions = _precisions(plan)
    assert precisions["Relu_0"] == "fp16" and precisions["SequenceConstruct_1"] == "fp32"
    assert "sequence, optional or untyped outputs" in plan.build_info["precision"]["kept_fp32"]["SequenceConstruct_1"]
    x = np.array([-1.0, 0.25], np.float32)
    assert _run(plan, {"x": x})["y"].tolist() == [0.0, 0.25]


def test_dynamic_shapes_in_fp16(rng):
    plan = _build(mlp_model(), fp16=True)
    engine = Runtime("cpu").load(plan).create_execution_context()
    for batch in (1, 5):
        x = rng.uniform(-1, 1, (batch, 16)).astype(np.float32)
        assert_close(engine.execute({"x": x})["y"], run_onnxruntime(mlp_model(), {"x": x})["y"], "fp16")


def test_inline_constants_of_a_fused_chain_are_converted_with_the_layer(rng):
    """An ElementwiseChain holds its scalars in its program: an fp16 chain must not compute
    against float32 constants (torch would promote the result back to float32)."""
    from tensorkiln.ir import Graph, Node, TensorType, Value
    x = Value("x", TensorType(DType.FLOAT32, (2, 3)))
    y = Value("y", TensorType(DType.FLOAT32, (2, 3)))
    program = [{"op": "Mul", "domain": "", "opset": 17, "attrs": {},
                "args": [{"input": 0}, {"const": 0.1, "dtype": "float32", "shape": [1]}]},
               {"op": "Relu", "domain": "", "opset": 17, "attrs": {}, "args": [{"prev": 1}]}]
    chain = Node("ElementwiseChain", [x], [y], {"program": program}, name="chain", domain="tensorkiln", opset=1)
    graph = Graph("g", [x], [y], [chain], opsets={"": 17, "tensorkiln": 1})
    plan = Builder(BuilderConfig(fp16=True, optimization_level=0)).build(graph)
    lowered = next(n for n in plan.graph.nodes if n.name == "chain")
    assert lowered.meta["precision"] == "fp16"
    assert lowered.attrs["program"][0]["args"][1] == {"const": float(np.float16(0.1)), "dtype": "float16",
                                                      "shape": [1]}
    assert program[0]["args"][1]["dtype"] == "float32"  # the caller's graph is not touched
    import torch
    feed = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
    _, layers = Runtime("cpu").load(plan).create_execution_context().execute_debug({"x": torch.from_numpy(feed)})
    assert layers["y_fp16"].dtype == torch.float16  # what the plan says the layer writes
    assert_close(layers["y"].numpy(), np.maximum(feed * 0.1, 0), "fp16")


# ---- the FP32 policy for numerically sensitive layers ---------------------------------------

SENSITIVE = """
<ir_version: 8, opset_import: ["" : 18]>
sensitive (float[2,4,32] x) => (float[2,4,32] p, float[2,4,32] n, float[2,4,1] s, float[2,4,1] small) {
    h = Mul(x, x)
    p = Softmax(h)
    n = LayerNormalization(h, gamma, beta)
    s = ReduceSum(h, axes32)
    q = Slice(h, st, en, ax)
    small = ReduceSum(q, axes32)
}
"""


def sensitive_model() -> onnx.ModelProto:
    return _model(SENSITIVE, gamma=np.ones(32, np.float32), beta=np.zeros(32, np.float32),
                  axes32=np.array([2], np.int64), st=np.array([0], np.int64), en=np.array([8], np.int64),
                  ax=np.array([2], np.int64))


def test_sensitive_layers_by_default(rng):
    plan = _build(sensitive_model(), fp16=True)
    precisions = _precisions(plan)
    assert precisions["Mul_0"] == "fp16"
    # Softmax and LayerNorm accumulate in fp32 inside, so they take and give fp16 tensors.
    assert precisions["Softmax_1"] == precisions["LayerNormalization_2"] == "fp16"
    # A large sum can outgrow fp16 whatever it accumulates in: it stays an fp32 layer.
    assert precisions["ReduceSum_3"] == "fp32"
    # A reduction over 8 elements is not "large": it runs in fp16.
    assert precisions["ReduceSum_5"] == "fp16"
    reasons = plan.build_info["precision"]["kept_fp32"]
    assert set(reasons) == {"ReduceSum_3"}
    assert reasons["ReduceSum_3"] == "numerically sensitive: a large reduction (sum over 32 elements)"
    # Squares of inputs up to 20 reach 400; their variance (~1e5) would overflow an fp16 sum.
    # (Softmax is checked on smaller logits: fp16 rounding of logits near 400 alone moves it.)
    for name, bound in (("n", 20.0), ("p", 4.0)):
        feeds = {"x": rng.uniform(-bound, bound, (2, 4, 32)).astype(np.float32)}
        got = _run(plan, feeds)
        expected = run_onnxruntime(sensitive_model(), feeds)
        assert np.isfinite(got[name]).all()
        assert_close(got[name], expected[name], "fp16", what=name)


def test_sensitive_layers_prefer_keeps_policy_obey_overrides(rng):
    asked = {"Softmax_1": "fp16", "LayerNormalization_2": "fp16", "ReduceSum_3": "fp16"}
    plan = _build(sensitive_model(), fp16=True, layer_precisions=asked, precision_constraints="prefer")
    assert _precisions(plan)["Softmax_1"] == _precisions(plan)["LayerNormalization_2"] == "fp16"
    for name in ("ReduceSum_3",):
        assert _precisions(plan)[name] == "fp32"
        assert "'obey' overrides it" in plan.graph.nodes[[n.name for n in plan.graph.nodes].index(name)].meta[
            "precision_reason"]
    plan = _build(sensitive_model(), fp16=True, layer_precisions=asked, precision_constraints="obey")
    for name in asked:
        assert _precisions(plan)[name] == "fp16"
    feeds = {"x": rng.uniform(-1, 1, (2, 4, 32)).astype(np.float32)}
    got = _run(plan, feeds)
    expected = run_onnxruntime(sensitive_model(), feeds)
    for name in ("p", "n", "s", "small"):
        assert_close(got[name], expected[name], "fp16", what=name)


def test_sensitivity_reason_and_blocker_units():
    graph = parse_onnx(sensitive_model())
    from tensorkiln.ops import infer_graph_types
    infer_graph_types(graph)
    nodes = {n.name: n for n in graph.nodes}
    assert sensitivity_reason(nodes["Mul_0"]) is None
    assert sensitivity_reason(nodes["ReduceSum_5"]) is None
    assert sensitivity_reason(nodes["ReduceSum_3"]) is not None
    assert low_precision_blocker(nodes["Mul_0"], DType.FLOAT16) is None
    cast_graph = parse_onnx(_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x) => (double[3] y) { y = Cast<to = 11>(x) }"""))
    infer_graph_types(cast_graph)
    reason = low_precision_blocker(cast_graph.nodes[0], DType.FLOAT16)
    assert reason == "its output dtype is set by the Cast op, not by its inputs"


def test_layer_that_cannot_run_lower_obey_fails_prefer_falls_back():
    # CastLike's output dtype is that of its second input (a float64 constant here).
    model = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x) => (double[3] y) { r = Relu(x) y = CastLike(r, like) }""", like=np.zeros(1, np.float64))
    with pytest.raises(BuildError, match=r"layer 'CastLike_1' \(CastLike\) cannot run in fp16.*set by the CastLike"):
        _build(model, layer_precisions={"CastLike_1": "fp16"}, precision_constraints="obey")
    plan = _build(model, layer_precisions={"CastLike_1": "fp16"}, precision_constraints="prefer")
    assert _precisions(plan) == {"Relu_0": "fp32", "CastLike_1": "fp32"}
    assert "set by the CastLike op" in plan.build_info["precision"]["kept_fp32"]["CastLike_1"]
    # With a wildcard, layers that cannot run so are skipped even under 'obey'.
    plan = _build(model, layer_precisions={"*": "fp16"}, precision_constraints="obey")
    assert _precisions(plan) == {"Relu_0": "fp16", "CastLike_1": "fp32"}
    assert [n.op_type for n in plan.graph.nodes] == ["Cast", "Relu", "Cast", "CastLike"]
    assert _run(plan, {"x": np.array([-1.0, 0.5, 2.0], np.float32)})["y"].tolist() == [0.0, 0.5, 2.0]


def test_a_cast_reads_a_lower_precision_input_as_it_comes():
    model = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[3] x) => (double[3] y, int32[3] i) { r = Relu(x) y = Cast<to = 11>(r) i = Cast<to = 6>(r) }""")
    plan = _build(model, fp16=True)
    assert [(n.op_type, n.inputs[0].name) for n in plan.graph.nodes] == [
        ("Cast", "x"), ("Relu", "x_fp16"), ("Cast", "r"), ("Cast", "r")]
    assert _precisions(plan) == {"Relu_0": "fp16", "Cast_1": "fp64", "Cast_2": "int32"}
    assert plan.build_info["precision"]["kept_fp32"] == {}
    got = _run(plan, {"x": np.array([-1.0, 0.5, 2.7], np.float32)})
    assert got["y"].dtype == np.float64 and got["y"].tolist() == [0.0, 0.5, np.float16(2.7).item()]
    assert got["i"].tolist() == [0, 0, 2]
    with pytest.raises(BuildError, match="a Cast's output dtype is its 'to' attribute"):
        _build(model, layer_precisions={"Cast_1": "fp16"}, precision_constraints="obey")


# ---- bf16 ---------------------------------------------------------------------------------------

def test_bf16_engine(rng):
    model = mlp_model()
    plan = _build(model, bf16=True)
    assert set(_precisions(plan).values()) == {"bf16"}
    assert all(str(v.const.dtype) == "bfloat16" for v in plan.graph.initializers)
    feeds = {"x": rng.uniform(-1, 1, (3, 16)).astype(np.float32)}
    got = _run(plan, feeds)["y"]
    assert_close(got, run_onnxruntime(model, feeds)["y"], "bf16")
    # Both allowed: fp16 is used (no timing-based choice on the CPU); a large sum stays fp32.
    both = _build(sensitive_model(), fp16=True, bf16=True)
    assert _precisions(both)["Mul_0"] == "fp16" and _precisions(both)["ReduceSum_3"] == "fp32"
    assert _precisions(_build(sensitive_model(), bf16=True))["Softmax_1"] == "bf16"


def test_bf16_bisect_finds_the_cancelling_layers(rng):
    # (x + 1000) - 1000: bf16 keeps 8 bits of mantissa, so 1000 + x loses x entirely.
    model = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[4,8] x) => (float[4,8] y) { s = Mul(x, one) a = Add(s, big) d = Sub(a, big) y = Relu(d) }""",
                   one=np.array(1.0, np.float32), big=np.array(1000.0, np.float32))
    feeds = {"x": rng.uniform(-1, 1, (4, 8)).astype(np.float32)}
    result = bisect_precision(parse_onnx(model), feeds, run_onnxruntime(model, feeds), precision="bf16",
                              thresholds=Thresholds(atol=tolerance_for("bf16").atol, rtol=tolerance_for("bf16").rtol),
                              config=BuilderConfig(optimization_level=0))
    assert not result.all_low_passed
    assert result.fp32_layers == ("Add_1", "Sub_2")


# ---- saved plans ----------------------------------------------------------------------------------

def test_saved_mixed_precision_plan_reloads_with_the_same_outputs(tmp_path, rng):
    plan = _build(mlp_model(), fp16=True, bf16=True, layer_precisions={"Relu_2": "fp32", "MatMul_3": "bf16"},
                  precision_constraints="obey")
    assert _precisions(plan) == {"MatMul_0": "fp16", "Add_1": "fp16", "Relu_2": "fp32", "MatMul_3": "bf16",
                                 "Add_4": "fp16"}
    path = tmp_path / "mixed.plan"
    plan.save(str(path))
    feeds = {"x": rng.uniform(-1, 1, (2, 16)).astype(np.float32)}
    before = _run(plan, feeds)["y"]
    engine = Runtime("cpu").load(str(path))
    assert [layer["precision"] for layer in engine.layers] == [n.meta["precision"] for n in plan.graph.nodes]
    after = engine.create_execution_context().execute(feeds)["y"]
    np.testing.assert_array_equal(after, before)
    assert_close(after, run_onnxruntime(mlp_model(), feeds)["y"], "bf16")


# ---- bad specs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer_precisions, constraints, message", [
    ({"Nope": "fp16"}, "obey", "names layer 'Nope', which the network does not have"),
    ({"Nope*": "fp16"}, "prefer", "pattern 'Nope*' matches no layer"),
    ({"Relu_2": "int8"}, "obey", "unknown precision 'int8' for layer 'Relu_2'"),
    ({"Re*lu*": "fp16"}, "obey", "'Re*lu*' has more than one '*'"),
    ({"Relu_2": "fp16"}, "none", "precision_constraints is 'none'"),
    ({}, "always", "precision_constraints must be one of none, prefer, obey"),
])
def test_bad_layer_precisions_are_config_errors(layer_precisions, constraints, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("*", r"\*")):
        _build(mlp_model(), fp16=True, layer_precisions=layer_precisions, precision_constraints=constraints)


def test_cli_layer_precisions_flags(tmp_path):
    model_path = tmp_path / "mlp.onnx"
    onnx.save(mlp_model(), model_path)
    out, err = io.StringIO(), io.StringIO()
    code = main(["exec", f"--onnx={model_path}", "--fp16", "--layerPrecisions=Relu_2:fp32,'MatMul_3':bf16",
                 "--precisionConstraints=obey", "--shapes=x:2x16", "--iterations=1", "--duration=0", "--warmUp=0",
                 f"--saveEngine={tmp_path / 'e.plan'}", "--builderOptimizationLevel=0"], out, err)
    assert code == 0, err.getvalue()
    assert "Layers by precision: 3 fp16, 1 fp32, 1 bf16; 5 reformat (Cast) layer(s)" in out.getvalue()
    out = io.StringIO()
    assert main(["inspect", str(tmp_path / "e.plan"), "--json"], out, io.StringIO()) == 0
    layers = {layer["name"]: layer["precision"] for layer in json.loads(out.getvalue())["layers"]}
    assert layers["Relu_2"] == "fp32" and layers["MatMul_3"] == "bf16"
    # kiln build spelling; an unknown layer is a one-line error naming it.
    err = io.StringIO()
    assert main(["build", str(model_path), "-o", str(tmp_path / "b.plan"), "--layer-precisions", "Nope:fp16",
                 "--precision-constraints", "prefer", "--optimization-level", "0"], io.StringIO(), err) == 1
    assert "layer_precisions names layer 'Nope'" in err.getvalue()
    err = io.StringIO()
    assert main(["build", str(model_path), "-o", str(tmp_path / "b.plan"), "--layer-precisions", "Relu_2:fp8",
                 "--precision-constraints", "obey", "--optimization-level", "0"], io.StringIO(), err) == 1
    assert "unknown precision 'fp8' for layer 'Relu_2'" in err.getvalue()
    # As trtexec: layer precisions without constraints are ignored, with a warning.
    out = io.StringIO()
    assert main(["build", str(model_path), "-o", str(tmp_path / "b.plan"), "--fp16", "--layer-precisions",
                 "Relu_2:fp32"], out, io.StringIO()) == 0
    assert "has no effect with --precision-constraints=none" in out.getvalue()


def test_best_allows_every_float_precision_tensorkiln_builds(tmp_path):
    # trtexec's --best: every precision the builder has (TF32, FP16, BF16); fp16 wins where both may run.
    model_path = tmp_path / "mlp.onnx"
    onnx.save(mlp_model(), model_path)
    runs = {}
    for flags in (["--best"], ["--fp16"]):
        out, err = io.StringIO(), io.StringIO()
        assert main(["exec", f"--onnx={model_path}", *flags, "--shapes=x:2x16", "--iterations=1", "--duration=0",
                     "--warmUp=0", "--builderOptimizationLevel=0"], out, err) == 0, err.getvalue()
        runs[flags[0]] = out.getvalue()
    assert "Precision: FP32+FP16+BF16 (TF32 allowed)" in runs["--best"]
    layers_line = [line for line in runs["--fp16"].splitlines() if "Layers by precision" in line][0]
    assert layers_line.split("] ", 1)[1] in runs["--best"]
    out = io.StringIO()
    assert main(["build", str(model_path), "-o", str(tmp_path / "b.plan"), "--best", "--no-tf32",
                 "--optimization-level", "0"], out, io.StringIO()) == 0
    out = io.StringIO()
    assert main(["inspect", str(tmp_path / "b.plan"), "--json"], out, io.StringIO()) == 0
    config = json.loads(out.getvalue())["build_config"]
    assert (config["fp16"], config["bf16"], config["tf32"]) == (True, True, False)
    # With --loadEngine nothing is built: --best is reported as ignored, as the other build flags are.
    out = io.StringIO()
    assert main(["exec", f"--loadEngine={tmp_path / 'b.plan'}", "--best", "--shapes=x:2x16", "--iterations=1",
                 "--duration=0", "--warmUp=0"], out, io.StringIO()) == 0
    assert "--best" in [line for line in out.getvalue().splitlines() if "ignored" in line][0]


# ---- bisect ---------------------------------------------------------------------------------------

def test_minimal_passing_set_is_one_minimal():
    layers = [f"l{i}" for i in range(13)]
    needed = {"l3", "l4", "l11"}
    tried = []

    def passes(subset, stage):
        tried.append(stage)
        return needed <= set(subset)
    assert minimal_passing_set(layers, passes) == ["l3", "l4", "l11"]
    assert len(tried) <= 3 * 5  # about log2(13) + 1 tries per needed layer
    tried.clear()
    needed = {"l0"}
    assert minimal_passing_set(layers, passes) == ["l0"]
    assert len(tried) <= 5
    needed = set()  # nothing needed: the empty prefix passes
    assert minimal_passing_set(layers, passes) == []


def test_format_layer_precisions_quotes_odd_names():
    assert format_layer_precisions({"a": "fp32", "b:0": "fp32", "c,d": "fp16"}) == "a:fp32,'b:0':fp32,'c,d':fp16"


def test_overflow_model_fails_in_fp16_and_bisect_finds_the_layers():
    model = overflow_model()
    feeds = inputs_of_100()
    expected = run_onnxruntime(model, feeds)
    fp16 = _run(_build(model, fp16=True), feeds)["y"]
    assert np.isinf(fp16).all()  # 2 * 100 * 1000 overflows fp16
    thresholds = Thresholds(atol=tolerance_for("fp16").atol, rtol=tolerance_for("fp16").rtol)
    steps = []
    result = bisect_precision(parse_onnx(model), feeds, expected, precision="fp16", thresholds=thresholds,
                              config=BuilderConfig(optimization_level=0), on_step=steps.append)
    # Mul_1 makes the overflowing tensor; Div_2 must read it in fp32 too (a Cast to fp16 would overflow).
    assert result.fp32_layers == ("Mul_1", "Div_2")
    assert result.candidates == ("Mul_0", "Mul_1", "Div_2", "Relu_3", "Add_4")
    assert not result.steps[0].trial.passed and len(steps) == len(result.steps)
    assert result.layer_precisions_spec() == "Mul_1:fp32,Div_2:fp32"
    plan = _build(model, fp16=True, layer_precisions=result.layer_precisions(), precision_constraints="obey")
    assert _precisions(plan) == {"Mul_0": "fp16", "Mul_1": "fp32", "Div_2": "fp32", "Relu_3": "fp16",
                                 "Add_4": "fp16"}
    assert_close(_run(plan, feeds)["y"], expected["y"], "fp16")


def test_bisect_at_the_default_optimization_level():
    # Fusions may merge and rename layers here; whatever they are, the set found must pass.
    model = overflow_model()
    feeds = inputs_of_100()
    expected = run_onnxruntime(model, feeds)
    thresholds = Thresholds(atol=tolerance_for("fp16").atol, rtol=tolerance_for("fp16").rtol)
    result = bisect_precision(parse_onnx(model), feeds, expected, thresholds=thresholds)
    assert not result.all_low_passed and result.found and result.fp32_layers
    plan = Builder(BuilderConfig(fp16=True, layer_precisions=result.layer_precisions(),
                                 precision_constraints="obey")).build(parse_onnx(model))
    assert {name for name, p in _precisions(plan).items() if p == "fp32"} >= set(result.fp32_layers)
    assert_close(_run(plan, feeds)["y"], expected["y"], "fp16")


def test_bisect_when_fp16_is_fine_and_when_fp32_fails_too(rng):
    model = mlp_model()
    feeds = {"x": rng.uniform(-1, 1, (2, 16)).astype(np.float32)}
    expected = run_onnxruntime(model, feeds)
    thresholds = Thresholds(atol=1e-2, rtol=1e-2)
    ok = bisect_precision(parse_onnx(model), feeds, expected, thresholds=thresholds)
    assert ok.all_low_passed and ok.fp32_layers == () and len(ok.steps) == 1
    wrong = {"y": expected["y"] + 1.0}
    bad = bisect_precision(parse_onnx(model), feeds, wrong, thresholds=thresholds)
    assert not bad.found and [s.stage for s in bad.steps][-1].startswith("all ")


def test_cli_debug_precision(tmp_path):
    model_path = tmp_path / "overflow.onnx"
    onnx.save(overflow_model(), model_path)
    np.savez(tmp_path / "x.npz", **inputs_of_100())
    out, err = io.StringIO(), io.StringIO()
    code = main(["debug", "precision", str(model_path), "--fp16", "--load-inputs", str(tmp_path / "x.npz"),
                 "--optimization-level", "0"], out, err)
    text = out.getvalue()
    assert code == 0, err.getvalue() + text
    assert "precision bisect" in text and "FAILED" in text and "PASSED" in text
    assert "2 of 5 fp16 layer(s) must stay fp32: 'Mul_1' (Mul), 'Div_2' (Div)" in text
    # Layer names depend on the optimization level, so a non-default one is part of the flags.
    assert "--layerPrecisions=Mul_1:fp32,Div_2:fp32 --precisionConstraints=obey --builderOptimizationLevel=0" in text
    assert "--layer-precisions Mul_1:fp32,Div_2:fp32 --precision-constraints obey --optimization-level 0" in text
    assert "PASSED: the engine built with these flags matches" in text
    # The printed flags work with kiln exec, on the same inputs.
    np.save(tmp_path / "x.npy", inputs_of_100()["x"])
    assert main(["exec", f"--onnx={model_path}", "--fp16", "--layerPrecisions=Mul_1:fp32,Div_2:fp32",
                 "--precisionConstraints=obey", "--builderOptimizationLevel=0", "--iterations=1", "--duration=0",
                 "--warmUp=0", f"--loadInputs=x:{tmp_path / 'x.npy'}", f"--exportOutput={tmp_path / 'out.json'}"],
                io.StringIO(), io.StringIO()) == 0
    exported = json.loads((tmp_path / "out.json").read_text())[0]
    got = np.array(exported["values"], np.float32).reshape(4, 8)
    assert_close(got, run_onnxruntime(overflow_model(), inputs_of_100())["y"], "fp16")


def test_cli_debug_precision_fails_when_fp32_cannot_match(tmp_path):
    # RandomUniformLike draws other numbers than onnxruntime's: no precision fixes that.
    model = _model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[4,8] x) => (float[4,8] y) { r = RandomUniformLike<seed = 1.0>(x) y = Add(x, r) }""")
    model_path = tmp_path / "random.onnx"
    onnx.save(model, model_path)
    out, err = io.StringIO(), io.StringIO()
    assert main(["debug", "precision", str(model_path), "--fp16"], out, err) == 1
    assert "does not come from fp16" in out.getvalue()
    err = io.StringIO()
    assert main(["debug", "precision", str(model_path)], io.StringIO(), err) == 2
    assert "needs --fp16 or --bf16" in err.getvalue()
