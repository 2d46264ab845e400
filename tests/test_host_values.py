"""Shape values on the host (runtime/host_values.py): which layers compute them, and the executor
running those on the CPU while the rest runs on the device.

On the CPU backend the executor is asked for the host split explicitly (the device there is the
host itself, so by default it keeps one path); the CUDA tests check the capture it enables."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx.printer
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from tensorkiln import Builder, BuilderConfig, Runtime
from tensorkiln.builder.config import OptimizationProfile
from tensorkiln.errors import ConfigError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.runtime.executor import GraphExecutor
from tensorkiln.runtime.host_values import MAX_HOST_ELEMENTS, find_host_values
from tensorkiln.testing.tolerances import tolerance_for

cuda = pytest.mark.cuda

# Shape arithmetic as exporters write it, with dynamic batch and sequence: Reshape's target from
# Shape, Gather, Mul and Concat (not a plain copy of dims, which the optimizer folds); the sequence
# length as data (a scale); the shape itself as an output; and Range reading shape values.
_SHAPE_MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
heads (float[B, S, 8] x) => (float[B, N, 4] split, float[B, S, 8] scaled, int64[3] dims, int64[S] positions{outputs})
<int64[1] first = {{0}}, int64[1] second = {{1}}, int64[1] two = {{2}}, int64[1] half_width = {{4}}, int64 zero = {{0}},
 int64 step = {{1}}>
{{
    dims = Shape(x)
    batch = Gather<axis = 0>(dims, first)
    length = Gather<axis = 0>(dims, second)
    rows = Mul(length, two)
    target = Concat<axis = 0>(batch, rows, half_width)
    split = Reshape(x, target)
    length_f = Cast<to = 1>(length)
    scaled = Div(x, length_f)
    length_scalar = Squeeze(length)
    positions = Range(zero, length_scalar, step)
{layers}}}
"""
SHAPE_MODEL = _SHAPE_MODEL.format(outputs="", layers="")
# The same with a branch whose condition and body read shape values (host control flow: no capture).
BRANCH_MODEL = _SHAPE_MODEL.format(outputs=", float[B, S, 8] branch", layers="""
    long = Greater(length, half_width)
    long_scalar = Squeeze(long)
    branch = If(long_scalar) <
        then_branch = g1 () => (float[B, S, 8] out) { out = Mul(x, length_f) },
        else_branch = g2 () => (float[B, S, 8] out) { out = Sub(x, length_f) }
    >
""")


def _plan(text: str, device: str = "cpu", **config):
    model = onnx.parser.parse_model(text)
    return model, Builder(BuilderConfig(device=device, **config)).build(parse_onnx(model))


def _ops(plan, layers) -> list[str]:
    return sorted(plan.graph.nodes[i].op_type for i in layers)


def test_shape_arithmetic_is_found():
    _, plan = _plan(BRANCH_MODEL)
    host = find_host_values(plan.graph)
    # Shape and what is computed from it alone; not Reshape/Div (data), If (a subgraph), nor Range
    # (its length is the sequence: no static size).
    assert _ops(plan, host.layers) == ["Cast", "Concat", "Gather", "Gather", "Greater", "Mul", "Shape",
                                                "Squeeze", "Squeeze"]
    assert {"dims", "target", "length_f", "long_scalar"} <= host.values
    assert not {"split", "scaled", "branch", "positions"} & host.values


@pytest.mark.parametrize("text, why", [
    ("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[B, 4] x) => (float[4] y) <int64[1] first = {0}> {
            s = Shape(x)
            b = Gather(s, first)
            f = Cast<to = 1>(b)
            y = RandomNormalLike(f)
        }""", "not deterministic"),
    (f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[B, 4] x) => (float[1] y) <float[{MAX_HOST_ELEMENTS + 1}] table = {{{', '.join(['1.0'] * (MAX_HOST_ELEMENTS + 1))}}},
                                         int64[1] first = {{0}}> {{
            s = Shape(x)
            b = Gather(s, first)
            y = Gather(table, b)
        }}""", "reads a constant too big to copy to the host"),
    (f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[B, 4] x) => (int64[B2] y) <int64[1] first = {{0}}, int64[1] size = {{{MAX_HOST_ELEMENTS + 1}}}> {{
            s = Shape(x)
            b = Gather(s, first)
            y = Tile(b, size)
        }}""", "gives more than MAX_HOST_ELEMENTS values"),
])
def test_layers_that_stay_on_the_device(text, why):
    graph = parse_onnx(onnx.parser.parse_model(text))
    host = find_host_values(graph)
    last = len(graph.nodes) - 1
    assert last not in host.layers, why
    assert 0 in host.layers  # the Shape itself


# Engine inputs read on the host (TensorRT's shape tensors): TopK's k, ReduceSum's axes (through a
# host layer: Cast), Reshape's shape. "scale" is read as data by Mul: it stays a device input.
HOST_INPUTS_MODEL = """
<ir_version: 8, opset_import: ["" : 18]>
picks (float[4, 6] x, int64[1] k, int32[1] axes32, int64[2] shape, float[1] scale) =>
      (float[4, K] top, int64[4, K] where, float[R] total, float[A, B] flat, float[4, 6] scaled) {
    top, where = TopK<axis = 1>(x, k)
    axes = Cast<to = 7>(axes32)
    total = ReduceSum<keepdims = 0>(x, axes)
    flat = Reshape(x, shape)
    scaled = Mul(x, scale)
}
"""


def test_engine_inputs_read_only_on_the_host_are_host_values():
    graph = parse_onnx(onnx.parser.parse_model(HOST_INPUTS_MODEL))
    host = find_host_values(graph)
    names = [v.name for v in graph.inputs]
    assert sorted(names[k] for k in host.inputs) == ["axes32", "k", "shape"]
    assert {"k", "axes32", "axes", "shape"} <= host.values and "scale" not in host.values
    assert _ops_of(graph, host.layers) == ["Cast"]
    # An input also read as device data anywhere is not one.
    both = HOST_INPUTS_MODEL.replace("scaled = Mul(x, scale)", "scaled = Mul(x, scale)\n    kf = Cast<to = 1>(k)")
    both = both.replace("float[4, 6] scaled)", "float[4, 6] scaled, float[1] kf)")
    graph = parse_onnx(onnx.parser.parse_model(both))
    host = find_host_values(graph)
    assert "k" not in [graph.inputs[i].name for i in host.inputs]
    # A toy model whose data input is small too: the reduction is not shape arithmetic, so the data
    # stays a device input and only the axes are read on the host.
    toy = parse_onnx(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 18]>
        toy (float[3, 2, 2] data, int64[1] axes) => (float[3, 2] y) { y = ReduceSum<keepdims = 0>(data, axes) }"""))
    host = find_host_values(toy)
    assert [toy.inputs[i].name for i in host.inputs] == ["axes"] and not host.layers


def test_host_values_of_any_dtype_get_device_copies():
    # A bfloat16 Range from engine inputs runs on the host; its output's device copy is found by
    # its bytes, which numpy (no bfloat16) could not give.
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        r (bfloat16 start, bfloat16 limit, bfloat16 delta) => (bfloat16[3] y) { y = Range(start, limit, delta) }""")
    _, plan = _plan(onnx.printer.to_text(model))
    engine = Runtime("cpu").load(plan)
    split = GraphExecutor(plan.graph, torch.device("cpu"), engine.executor.resolve, shape_values_on_host=True)
    assert split.host.inputs == frozenset({0, 1, 2}) and split.host.layers == frozenset({0})
    feeds = [torch.tensor(v, dtype=torch.bfloat16) for v in (1.0, 4.0, 1.0)]
    for _ in range(2):
        (y,) = split.run(feeds)
        assert y.dtype == torch.bfloat16 and y.tolist() == [1.0, 2.0, 3.0]
    assert len(split._device_copies) == 1


def _ops_of(graph, layers) -> list[str]:
    return sorted(graph.nodes[i].op_type for i in layers)


def _inputs(rng, batch: int, length: int) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((batch, length, 8)).astype(np.float32)}


@pytest.mark.parametrize("batch, length", [(2, 3), (1, 6), (3, 5)])
def test_executor_runs_shape_layers_on_the_host(rng, batch, length):
    """The split executor gives the one-path results and the ONNX reference's, for a host value
    read as a shape (Reshape), as data (Div), as an output, by a branch and by Range."""
    model, plan = _plan(BRANCH_MODEL)
    engine = Runtime("cpu").load(plan)
    split = GraphExecutor(plan.graph, torch.device("cpu"), engine.executor.resolve, shape_values_on_host=True)
    assert split.host and not engine.executor.host
    feeds = _inputs(rng, batch, length)
    names = [v.name for v in plan.graph.outputs]
    got = dict(zip(names, split.run([torch.from_numpy(feeds["x"])])))
    one_path = dict(zip(names, engine.executor.run([torch.from_numpy(feeds["x"])])))
    want = dict(zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, feeds)))
    tol = tolerance_for("fp32")
    for name in names:
        assert torch.equal(got[name], one_path[name]), name
        np.testing.assert_allclose(got[name].numpy(), want[name], rtol=tol.rtol, atol=tol.atol, err_msg=name)
    # Each distinct host value read as data is copied to the device once, by content.
    copies = len(split._device_copies)
    split.run([torch.from_numpy(feeds["x"])])
    assert len(split._device_copies) == copies > 0


# ---- CUDA ---------------------------------------------------------------------------------

def _dynamic_profile(min_shape, opt_shape, max_shape) -> OptimizationProfile:
    return OptimizationProfile({"x": (min_shape, opt_shape, max_shape)})


@cuda
def test_dynamic_shapes_capture_a_cuda_graph(rng):
    """Built for a range of shapes, the engine keeps its shape arithmetic; run on the host, it
    needs no device sync, so every input shape captures and replays a CUDA graph."""
    model, plan = _plan(SHAPE_MODEL, "cuda", tf32=False,
                        profiles=(_dynamic_profile((1, 1, 8), (2, 4, 8), (4, 8, 8)),))
    engine = Runtime("cuda").load(plan)
    eager = engine.create_execution_context(cuda_graph=False)
    graph = engine.create_execution_context()
    reference = ReferenceEvaluator(model)
    tol = tolerance_for("fp32")
    for batch, length in ((2, 3), (2, 3), (2, 3), (1, 6), (1, 6), (4, 8), (4, 8), (2, 3)):
        feeds = _inputs(rng, batch, length)
        x = {"x": torch.from_numpy(feeds["x"]).cuda()}
        a, b = eager.execute(x), graph.execute(x)
        want = dict(zip([o.name for o in model.graph.output], reference.run(None, feeds)))
        for name in a:
            assert torch.equal(a[name], b[name]), name
            assert b[name].is_cuda, name
            np.testing.assert_allclose(b[name].cpu().numpy(), want[name], rtol=tol.rtol, atol=tol.atol, err_msg=name)
    assert graph.warnings == [], graph.warnings
    assert len(graph._graphs.captured_signatures) == 3


@cuda
def test_a_context_keeps_at_most_max_graphs(rng, monkeypatch):
    """Past MAX_GRAPHS the least recently used graph is released; its shape, back again, warms
    up and captures anew, with the same results."""
    from tensorkiln.runtime import cuda_graph
    monkeypatch.setattr(cuda_graph, "MAX_GRAPHS", 2)
    monkeypatch.setattr(cuda_graph, "MAX_SIGNATURES", 3)
    model, plan = _plan(SHAPE_MODEL, "cuda", tf32=False,
                        profiles=(_dynamic_profile((1, 1, 8), (2, 4, 8), (4, 8, 8)),))
    engine = Runtime("cuda").load(plan)
    eager = engine.create_execution_context(cuda_graph=False)
    graph = engine.create_execution_context()
    graphs = graph._graphs
    for batch, length in ((2, 3), (1, 6), (4, 8), (2, 3), (3, 5), (1, 2), (2, 3)):
        feeds = {"x": torch.from_numpy(_inputs(rng, batch, length)["x"]).cuda()}
        for _ in range(3):  # warm-up, capture, replay
            a, b = eager.execute(feeds), graph.execute(feeds)
            assert all(torch.equal(a[name], b[name]) for name in a)
        # A signature is ((shape, dtype) per input); this model has one input.
        captured = [tuple(key[0][0]) for key in graphs.captured_signatures]
        assert len(captured) <= 2 and captured[-1] == (batch, length, 8), captured
        assert len(graphs._entries) <= 3
    assert graph.warnings == [], graph.warnings


@cuda
def test_engine_inputs_read_on_the_host_capture_a_graph_per_value(rng):
    """k, axes and a shape given as engine inputs stay on the host: no device sync reads them, the
    engine captures CUDA graphs, and each new value gets its own graph (its value shapes the work)."""
    model = onnx.parser.parse_model(HOST_INPUTS_MODEL)
    plan = Builder(BuilderConfig(device="cuda", tf32=False, optimization_level=0)).build(parse_onnx(model))
    engine = Runtime("cuda").load(plan)
    ctx = engine.create_execution_context()
    reference = ReferenceEvaluator(model)
    tol = tolerance_for("fp32")
    calls = [(2, 1, (3, 8)), (2, 1, (3, 8)), (2, 1, (3, 8)), (3, 0, (24, 1)), (3, 0, (24, 1)), (2, 1, (3, 8))]
    for k, axis, shape in calls:
        feeds = {"x": rng.standard_normal((4, 6)).astype(np.float32), "k": np.array([k], np.int64),
                 "axes32": np.array([axis], np.int32), "shape": np.array(shape, np.int64),
                 "scale": np.array([0.5], np.float32)}
        on_device = {name: torch.from_numpy(v).cuda() for name, v in feeds.items()}
        got = ctx.execute(on_device)
        want = dict(zip([o.name for o in model.graph.output], reference.run(None, feeds)))
        for name, value in got.items():
            assert value.is_cuda, name
            np.testing.assert_allclose(value.cpu().numpy(), want[name], rtol=tol.rtol, atol=tol.atol, err_msg=name)
    assert ctx.cuda_graph and not engine.cuda_graph_failure and ctx.warnings == [], ctx.warnings
    assert len(ctx._graphs.captured_signatures) == 2
    with pytest.raises(ConfigError, match="reads input.*on the host"):
        ctx.input_buffers({"x": (4, 6), "k": (1,), "axes32": (1,), "shape": (2,), "scale": (1,)})
