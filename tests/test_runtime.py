import numpy as np
import onnx.parser
import pytest
import torch

import tensorkiln
from tensorkiln import Builder, BuilderConfig, OptimizationProfile, Runtime
from tensorkiln.errors import ConfigError, ExecutionError, ShapeError
from tensorkiln.frontends.onnx import parse_onnx

from models import elementwise_expected, elementwise_model


@pytest.fixture
def engine():
    # Level 0: the layers stay as written, so introspection sees Add, Mul, Relu.
    return Runtime().load(Builder(BuilderConfig(optimization_level=0)).build(parse_onnx(elementwise_model())))


def _feeds(rng, n=3):
    return {"x": rng.standard_normal((n, 4)).astype(np.float32), "y": rng.standard_normal((n, 4)).astype(np.float32)}


def test_io_introspection(engine):
    assert engine.input_names == ["x", "y"] and engine.output_names == ["z"]
    x = engine.inputs[0]
    assert x.dtype is tensorkiln.DType.FLOAT32 and x.shape == ("N", 4)
    assert [layer["op"] for layer in engine.layers] == ["Add", "Mul", "Relu"]
    assert all(layer["tactic"] == "reference" for layer in engine.layers)


def test_numpy_in_numpy_out_and_torch_in_torch_out(engine, rng):
    ctx = engine.create_execution_context()
    feeds = _feeds(rng, 5)
    out = ctx.execute(feeds)["z"]
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, elementwise_expected(feeds["x"], feeds["y"], elementwise_model()), rtol=1e-6)
    tout = ctx.execute({k: torch.from_numpy(v) for k, v in feeds.items()})["z"]
    assert isinstance(tout, torch.Tensor)
    np.testing.assert_array_equal(tout.numpy(), out)


def test_wrong_dtype_names_input(engine, rng):
    feeds = _feeds(rng)
    feeds["y"] = feeds["y"].astype(np.float64)
    with pytest.raises(ShapeError, match="input 'y' must be float32, got float64"):
        engine.create_execution_context().execute(feeds)


def test_wrong_rank_and_static_dim_name_input(engine, rng):
    ctx = engine.create_execution_context()
    feeds = _feeds(rng)
    with pytest.raises(ShapeError, match="input 'x' must have rank 2"):
        ctx.execute({**feeds, "x": feeds["x"].reshape(-1)})
    with pytest.raises(ShapeError, match="input 'x' dimension 1 must be 4, got 2"):
        ctx.execute({"x": np.zeros((3, 2), np.float32), "y": np.zeros((3, 2), np.float32)})


def test_inconsistent_symbolic_dim_across_inputs(engine, rng):
    with pytest.raises(ShapeError, match="input 'y' dimension 0 \\('N'\\) is 2, but input 'x' gave 'N' = 3"):
        engine.create_execution_context().execute({"x": np.zeros((3, 4), np.float32), "y": np.zeros((2, 4), np.float32)})


def test_missing_and_unknown_inputs(engine, rng):
    feeds = _feeds(rng)
    with pytest.raises(ShapeError, match=r"missing input\(s\) \['y'\]"):
        engine.create_execution_context().execute({"x": feeds["x"]})
    with pytest.raises(ShapeError, match=r"unknown input\(s\) \['q'\]"):
        engine.create_execution_context().execute({**feeds, "q": feeds["x"]})


def test_profiles_bound_dynamic_shapes():
    profile = OptimizationProfile({"x": ((1, 4), (4, 4), (8, 4)), "y": ((1, 4), (4, 4), (8, 4))})
    plan = Builder(BuilderConfig(profiles=(profile,))).build(parse_onnx(elementwise_model()))
    engine = Runtime().load(plan.serialize())
    assert engine.inputs[0].profiles[0].max == (8, 4)
    ctx = engine.create_execution_context()
    ok = np.zeros((8, 4), np.float32)
    ctx.execute({"x": ok, "y": ok})
    big = np.zeros((9, 4), np.float32)
    with pytest.raises(ShapeError, match=r"input 'x' shape \[9, 4\] is outside every optimization profile "
                                         r"\(min \[1, 4\] max \[8, 4\]\)"):
        ctx.execute({"x": big, "y": big})
    assert plan.memory["peak_activation_bytes_at_opt"] > 0


@pytest.mark.parametrize("profile, message", [
    ({"q": ((1, 4), (1, 4), (1, 4))}, "names input 'q', which the network does not have"),
    ({"x": ((4, 4), (2, 4), (8, 4))}, "need min <= opt <= max"),
    ({"x": ((1,), (1,), (1,))}, "has rank 1, but the input is \\[N,4\\]"),
    ({"x": ((1, 3), (1, 3), (1, 3))}, "the network fixes it to 4"),
])
def test_invalid_profiles_refused(profile, message):
    with pytest.raises(ConfigError, match=message):
        Builder(BuilderConfig(profiles=(OptimizationProfile(profile),))).build(parse_onnx(elementwise_model()))


def test_layer_failure_names_the_layer():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N] x, float[M] y) => (float[?] z) { z = Add(x, y) }""")
    with pytest.raises(ExecutionError, match="layer 'Add_0' \\(Add\\) failed on inputs \\[\\(3,\\):float32, \\(4,\\):float32\\]"):
        tensorkiln.compile(model).predict({"x": np.zeros(3, np.float32), "y": np.zeros(4, np.float32)})


def test_compile_predict_accepts_list_dict_and_single(rng):
    model = tensorkiln.compile(elementwise_model())
    feeds = _feeds(rng)
    a = model.predict(feeds)["z"]
    b = model.predict([feeds["x"], feeds["y"]])["z"]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ShapeError, match="takes 2 inputs"):
        model.predict(feeds["x"])


def test_unknown_device_refused():
    with pytest.raises(ConfigError, match="device 'tpu'"):
        Runtime("tpu")


def test_cuda_refused_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        Runtime("cuda")


@pytest.mark.cuda
def test_cuda_reference_backend_matches_cpu(rng):
    feeds = _feeds(rng)
    cpu = tensorkiln.compile(elementwise_model()).predict(feeds)["z"]
    gpu = tensorkiln.compile(elementwise_model(), device="cuda").predict(feeds)["z"]
    np.testing.assert_allclose(gpu, cpu, rtol=1e-6)


def test_profile_layers_times_every_layer(engine, rng):
    ctx = engine.create_execution_context()
    profile = ctx.profile_layers(_feeds(rng), runs=4, warmup=1)
    assert profile.runs == 4
    assert [(t.name, t.op_type, t.tactic) for t in profile.layers] == \
        [(layer["name"], layer["op"], layer["tactic"]) for layer in engine.layers]
    assert all(t.total_ms > 0 and t.median_ms > 0 for t in profile.layers)
    assert all(abs(t.average_ms * 4 - t.total_ms) < 1e-9 for t in profile.layers)
    assert abs(sum(t.percentage for t in profile.layers) - 100.0) < 1e-6
    records = profile.to_json()
    assert records[0] == {"count": 4} and [r["name"] for r in records[1:]] == [t.name for t in profile.layers]
    with pytest.raises(ConfigError, match="runs >= 1"):
        ctx.profile_layers(_feeds(rng), runs=0)


CAST_OUTPUTS_MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
casts (float[N,4] x) => (float[N,4] a, float[N,4] e, float[N,4] f, float16[N,4] g, float[N,4] k) {
    h = Cast <to = 10> (x)
    r = Relu (h)
    a = Cast <to = 1> (r)
    e = Cast <to = 1> (h)
    f = Neg (e)
    g = Cast <to = 10> (x)
    i = Cast <to = 6> (r)
    k = Cast <to = 1> (i)
}
"""


def test_output_casts_are_deferred_to_the_copy_out():
    """The executor CUDA graphs capture leaves out the Cast layers that only make a float output
    (the copy out of the graph converts); casts that other layers read, of a graph input, or from
    an integer stay layers. The outputs agree exactly once cast."""
    plan = Builder(BuilderConfig(optimization_level=0)).build(parse_onnx(onnx.parser.parse_model(CAST_OUTPUTS_MODEL)))
    engine = Runtime().load(plan)
    deferred, dtypes = engine.executor.deferring_output_casts()
    assert dict(zip(engine.output_names, dtypes)) == {"a": torch.float32, "e": None, "f": None, "g": None, "k": None}
    assert len(deferred.steps) == len(engine.executor.steps) - 1
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    full, part = engine.executor.run([x]), deferred.run([x])
    assert part[0].dtype == torch.float16
    for whole, partial, dtype in zip(full, part, dtypes):
        assert torch.equal(whole, partial if dtype is None else partial.to(dtype))
    assert engine.executor.deferring_output_casts()[0] is not engine.executor
    plain = Runtime().load(Builder(BuilderConfig(optimization_level=0)).build(parse_onnx(elementwise_model())))
    unchanged, none = plain.executor.deferring_output_casts()
    assert unchanged is plain.executor and none == [None]


TRANSPOSE_MODEL = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3,4,5] x) => (float[2,4,5,3] y) { y = Transpose <perm = [0, 2, 3, 1]> (x) }"""


def test_outputs_come_back_dense_in_the_declared_layout():
    """A tactic may leave its output as a strided view (Transpose) or channels_last; the engine's
    outputs are row-major, as TensorRT's linear format (and numpy's C order) are."""
    engine = Runtime().load(Builder(BuilderConfig(optimization_level=0)).build(
        parse_onnx(onnx.parser.parse_model(TRANSPOSE_MODEL))))
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    y = engine.create_execution_context().execute({"x": x})["y"]
    assert y.is_contiguous() and torch.equal(y, x.permute(0, 2, 3, 1))
