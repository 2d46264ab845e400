"""The CUDA runtime: CUDA graphs, streams, zero-copy and numpy I/O, preallocated outputs,
TF32 scope, capture fallback, and the memory plan against the caching allocator.

GPU tests carry the `cuda` marker; the TF32 scope and the CPU-side API run everywhere."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import onnx
import onnx.parser
import pytest
import torch
from onnx import numpy_helper

from tensorkiln import Builder, BuilderConfig, OptimizationProfile, Runtime
from tensorkiln.errors import ConfigError, ShapeError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.planner import plan_arena
from tensorkiln.runtime import cuda_graph
from tensorkiln.testing import zoo
from tensorkiln.testing.tolerances import tolerance_for

from models import elementwise_expected, elementwise_model

cuda = pytest.mark.cuda


def _engine(model: onnx.ModelProto, device: str = "cuda", **config):
    plan = Builder(BuilderConfig(device=device, **config)).build(parse_onnx(model))
    return Runtime(device).load(plan)


def _feeds(rng, n=3):
    return {"x": rng.standard_normal((n, 4)).astype(np.float32), "y": rng.standard_normal((n, 4)).astype(np.float32)}


def _on(feeds, device="cuda"):
    return {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}


# ---- everywhere -------------------------------------------------------------------------

TF32_STATES = {
    "default": "",
    "legacy_on": "b.cuda.matmul.allow_tf32 = True; b.cudnn.allow_tf32 = True",
    "legacy_off": "b.cuda.matmul.allow_tf32 = False; b.cudnn.allow_tf32 = False",
    "new_api": "b.cuda.matmul.fp32_precision = 'ieee'; b.cudnn.conv.fp32_precision = 'ieee'",
    "medium": "torch.set_float32_matmul_precision('medium')",
}


@pytest.mark.parametrize("state", sorted(TF32_STATES))
def test_tf32_scope_sets_and_restores_exactly(state):
    # Each state in a fresh process: torch's flags are process-global.
    code = f"""
import torch
b = torch.backends
from tensorkiln.tactics.tf32 import tf32_scope, tf32_state, _snapshot
{TF32_STATES[state]}
before = _snapshot()
for want in (True, False, True):
    with tf32_scope(want):
        assert tf32_state() == (want, want), (want, tf32_state())
    assert _snapshot() == before, (before, _snapshot())
try:
    with tf32_scope(not tf32_state()[0]):
        raise KeyError("inside")
except KeyError:
    pass
assert _snapshot() == before
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cpu_context_api():
    engine = _engine(elementwise_model(), "cpu", optimization_level=0)
    ctx = engine.create_execution_context(cuda_graph=True)
    assert not ctx.cuda_graph and ctx.warnings == []
    feeds = _feeds(np.random.default_rng(0))
    want = elementwise_expected(feeds["x"], feeds["y"], elementwise_model())
    out = torch.empty(3, 4)
    res = ctx.execute(feeds, outputs={"z": out})
    assert res["z"] is out
    np.testing.assert_array_equal(out.numpy(), want)
    arr = np.empty((3, 4), np.float32)
    assert ctx.execute(feeds, outputs={"z": arr})["z"] is arr
    np.testing.assert_array_equal(arr, want)
    with pytest.raises(ShapeError, match="preallocated output 'z' has shape \\[2, 4\\]"):
        ctx.execute(feeds, outputs={"z": torch.empty(2, 4)})
    with pytest.raises(ShapeError, match="preallocated output 'z' must be torch.float32"):
        ctx.execute(feeds, outputs={"z": torch.empty(3, 4, dtype=torch.float64)})
    with pytest.raises(ShapeError, match="not outputs of the engine"):
        ctx.execute(feeds, outputs={"w": out})
    with pytest.raises(ConfigError, match="input_buffers needs"):
        ctx.input_buffers({"x": (3, 4), "y": (3, 4)})
    assert engine.device_memory_size is None or engine.device_memory_size >= 0
    assert engine.tf32 is True


# ---- CUDA ---------------------------------------------------------------------------------

@cuda
def test_graph_and_eager_identical_and_correct(rng):
    model = elementwise_model()
    engine = _engine(model)
    eager = engine.create_execution_context(cuda_graph=False)
    graph = engine.create_execution_context()
    assert graph.cuda_graph and not eager.cuda_graph
    for _ in range(4):  # warm-up, capture, replays
        feeds = _on(_feeds(rng))
        a = eager.execute(feeds)["z"]
        b = graph.execute(feeds)["z"]
        assert torch.equal(a, b)
        np.testing.assert_array_equal(b.cpu().numpy(), elementwise_expected(
            *(feeds[k].cpu().numpy() for k in "xy"), model))
    assert len(graph._graphs.captured_signatures) == 1 and graph.warnings == []


@cuda
@pytest.mark.parametrize("name", ["resnet50", "mobilenetv2", "bert_encoder"])
def test_graph_matches_eager_on_zoo(name):
    model = zoo.build(name, small=True)
    engine = _engine(model, tf32=False)
    cpu = _engine(model, "cpu")
    eager = engine.create_execution_context(cuda_graph=False)
    graph = engine.create_execution_context()
    for seed in range(3):
        feeds = zoo.example_inputs(model, batch=2, seed=seed)
        a, b = eager.execute(_on(feeds)), graph.execute(_on(feeds))
        want = cpu.create_execution_context().execute(feeds)
        tol = tolerance_for("fp32")
        for k in a:
            # Same kernels in the same order: bitwise equal.
            assert torch.equal(a[k], b[k]), (name, k)
            np.testing.assert_allclose(b[k].cpu().numpy(), want[k], rtol=tol.rtol, atol=tol.atol)
    # bert_encoder's position ids are sliced to the length Shape(input_ids) gives: that arithmetic
    # runs on the host (runtime/host_values.py), so it captures too.
    assert graph.warnings == [] and graph._graphs.captured_signatures


RESIZE_MODEL = """
<ir_version: 8, opset_import: ["" : 19]>
resize_graph (float[1, 3, 8, 6] x) => (float[1, 3, 16, 12] nearest, float[1, 3, 16, 12] linear,
                                       float[1, 3, 4, 4] crop)
<float[4] scales = {1.0, 1.0, 2.0, 2.0}, float[8] roi = {0, 0, 0.1, 0.2, 1, 1, 1.3, 0.9}, int64[4] crop_sizes = {1, 3, 4, 4}>
{
    nearest = Resize <mode = "nearest"> (x, , scales)
    linear = Resize <mode = "linear", coordinate_transformation_mode = "half_pixel"> (x, , scales)
    crop = Resize <mode = "cubic", coordinate_transformation_mode = "tf_crop_and_resize", extrapolation_value = 7.0>
           (x, roi, , crop_sizes)
}
"""


@cuda
def test_resize_layers_are_captured_in_the_graph(rng):
    """Resize keeps its index and weight tables on the device: no host copy mid-engine, so the
    engine replays a CUDA graph, with the eager results (extrapolated positions included)."""
    model = onnx.parser.parse_model(RESIZE_MODEL)
    engine = _engine(model, tf32=False)
    eager = engine.create_execution_context(cuda_graph=False)
    graph = engine.create_execution_context()
    for _ in range(3):
        x = {"x": torch.from_numpy(rng.standard_normal((1, 3, 8, 6)).astype(np.float32)).cuda()}
        a, b = eager.execute(x), graph.execute(x)
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert graph.warnings == [] and graph._graphs.captured_signatures
    assert (b["crop"] == 7.0).any(), "the roi reaches outside the input: some positions take extrapolation_value"


@cuda
def test_shape_change_recaptures(rng):
    engine = _engine(elementwise_model())
    ctx = engine.create_execution_context()
    model = elementwise_model()
    for n in (2, 2, 3, 3, 3, 2, 5, 2):
        feeds = _feeds(rng, n)
        out = ctx.execute(_on(feeds))["z"]
        np.testing.assert_array_equal(out.cpu().numpy(), elementwise_expected(feeds["x"], feeds["y"], model))
    # 2 and 3 were seen twice (captured); 5 once (its warm-up only).
    assert sorted(k[0][0][0] for k in ctx._graphs.captured_signatures) == [2, 3]


@cuda
@pytest.mark.parametrize("use_graph", [False, True])
def test_user_stream_enqueues_without_waiting(rng, use_graph):
    model = elementwise_model()
    ctx = _engine(model).create_execution_context(cuda_graph=use_graph)
    feeds = _feeds(rng, 64)
    dev = _on(feeds)
    for _ in range(2):
        ctx.execute(dev)  # warm-up and capture
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)  # keep the stream busy for a while (~0.1 s)
    out = ctx.execute(dev, stream=stream)["z"]
    done = torch.cuda.Event()
    done.record(stream)
    assert not done.query(), "execute waited for the stream instead of enqueueing on it"
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    stream.synchronize()
    np.testing.assert_array_equal(out.cpu().numpy(), elementwise_expected(feeds["x"], feeds["y"], model))
    # Then on the default stream again: the context orders itself after the other stream.
    out2 = ctx.execute(dev)["z"]
    assert torch.equal(out2, out)


@cuda
def test_numpy_in_numpy_out(rng):
    model = elementwise_model()
    ctx = _engine(model).create_execution_context()
    for n in (3, 3, 3, 5000):  # 5000 x 4 floats = 80 KB: staged through pinned memory
        feeds = _feeds(rng, n)
        out = ctx.execute(feeds)["z"]
        assert isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, elementwise_expected(feeds["x"], feeds["y"], model))
    # A mix with a torch tensor gives torch outputs.
    feeds = _feeds(rng, 3)
    out = ctx.execute({"x": torch.from_numpy(feeds["x"]), "y": feeds["y"]})["z"]
    assert isinstance(out, torch.Tensor) and out.is_cuda


@cuda
def test_cuda_tensors_pass_through_without_copies():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    ident (float[N,4] x) => (float[N,4] y) { y = Identity(x) }
    """
    engine = _engine(onnx.parser.parse_model(text), optimization_level=0)
    x = torch.randn(3, 4, device="cuda")
    y = engine.create_execution_context(cuda_graph=False).execute({"x": x})["y"]
    assert y.data_ptr() == x.data_ptr()  # eager: the input tensor itself, no copy
    ctx = engine.create_execution_context()
    for _ in range(3):
        y = ctx.execute({"x": x})["y"]
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()  # graphs: a fresh output


@cuda
@pytest.mark.parametrize("use_graph", [False, True])
def test_preallocated_outputs(rng, use_graph):
    model = elementwise_model()
    ctx = _engine(model).create_execution_context(cuda_graph=use_graph)
    for _ in range(3):
        feeds = _feeds(rng, 6)
        want = elementwise_expected(feeds["x"], feeds["y"], model)
        gpu = torch.empty(6, 4, device="cuda")
        res = ctx.execute(_on(feeds), outputs={"z": gpu})
        assert res["z"] is gpu
        np.testing.assert_array_equal(gpu.cpu().numpy(), want)
        host = np.empty((6, 4), np.float32)
        assert ctx.execute(feeds, outputs={"z": host})["z"] is host
        np.testing.assert_array_equal(host, want)
    with pytest.raises(ShapeError, match="has shape"):
        ctx.execute(_on(_feeds(rng, 6)), outputs={"z": torch.empty(5, 4, device="cuda")})


@cuda
@pytest.mark.parametrize("foreach_bytes", [4 << 20, 0])
def test_graph_outputs_are_fresh_copies(monkeypatch, foreach_bytes):
    """Each replay's outputs are the call's own tensors (one multi-tensor copy for small outputs,
    a copy each past the limit): a later call does not overwrite them."""
    monkeypatch.setattr(cuda_graph, "_FOREACH_COPY_OUT_BYTES", foreach_bytes)
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    two (float[N,4] x) => (float[N,4] a, float[N,4] b) { a = Relu(x)  b = Neg(x) }
    """)
    ctx = _engine(model).create_execution_context()
    gen = torch.Generator(device="cuda").manual_seed(0)
    calls = []
    for _ in range(5):
        x = torch.randn(6, 4, device="cuda", generator=gen)
        calls.append((x, ctx.execute({"x": x})))
    assert ctx._graphs.captured_signatures
    for x, out in calls:
        assert torch.equal(out["a"], torch.relu(x)) and torch.equal(out["b"], -x)


@cuda
def test_inputs_after_capture_are_still_checked(rng):
    """Once a signature is checked, device tensors go straight to the replay; wrong inputs still take
    the general path, which explains them."""
    model = elementwise_model()
    ctx = _engine(model).create_execution_context()
    feeds = _on(_feeds(rng, 4))
    for _ in range(3):
        ctx.execute(feeds)
    def general_path(*args, **kwargs):
        raise AssertionError("a checked device-tensor call took the general path")
    checked_run = ctx._run
    ctx._run = general_path
    np.testing.assert_array_equal(ctx.execute(feeds)["z"].cpu().numpy(), elementwise_expected(
        *(feeds[k].cpu().numpy() for k in "xy"), model))
    with pytest.raises(AssertionError, match="general path"):
        ctx.execute({k: v.cpu() for k, v in feeds.items()})  # host tensors are converted: the general path
    ctx._run = checked_run
    with pytest.raises(ShapeError, match="missing input"):
        ctx.execute({"x": feeds["x"]})
    with pytest.raises(ShapeError, match="unknown input"):
        ctx.execute({**feeds, "w": feeds["x"]})
    with pytest.raises(ShapeError):
        ctx.execute({"x": feeds["x"].double(), "y": feeds["y"]})
    np.testing.assert_array_equal(ctx.execute(feeds)["z"].cpu().numpy(), elementwise_expected(
        *(feeds[k].cpu().numpy() for k in "xy"), model))


@cuda
def test_graph_copy_out_performs_the_output_casts():
    """With CUDA graphs the fp16 -> fp32 output cast is done by the copy out of the graph: the same
    values and dtypes as eager, into fresh tensors, preallocated buffers and numpy."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    casts (float[N,4] x) => (float[N,4] a, float16[N,4] r) {
        h = Cast <to = 10> (x)
        r = Relu (h)
        a = Cast <to = 1> (r)
    }
    """)
    engine = _engine(model, optimization_level=0)
    assert engine._output_casts == [torch.float32, None]
    eager, graph = engine.create_execution_context(cuda_graph=False), engine.create_execution_context()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for _ in range(4):
        x = torch.randn(3, 4, device="cuda", generator=gen)
        want, got = eager.execute({"x": x}), graph.execute({"x": x})
        for name in ("a", "r"):
            assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name])
    assert graph._graphs.captured_signatures
    buffer = torch.empty(3, 4, device="cuda")
    assert graph.execute({"x": x}, outputs={"a": buffer})["a"] is buffer and torch.equal(buffer, want["a"])
    host = graph.execute({"x": x.cpu().numpy()})
    assert host["a"].dtype == np.float32 and np.array_equal(host["a"], want["a"].cpu().numpy())


@cuda
def test_fp16_io_formats_on_the_gpu():
    """An fp16 engine with fp16 I/O formats converts nothing at its boundary: no Cast layers,
    fp16 tensors in and out, CUDA graph and eager identical, within fp16 tolerance of fp32 torch."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    mlp (float[N,64] x) => (float[N,32] y) {
        h = MatMul(x, w1)
        a = Relu(h)
        y = MatMul(a, w2)
    }
    """)
    gen = np.random.default_rng(0)
    w1, w2 = (gen.uniform(-0.2, 0.2, s).astype(np.float32) for s in ((64, 48), (48, 32)))
    model.graph.initializer.extend([numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    engine = _engine(model, fp16=True, input_formats={"x": "fp16"}, output_formats={"y": "fp16"})
    assert [s.dtype.short for s in engine.inputs] == ["float16"]
    assert not [n for n in engine.plan.graph.nodes if n.op_type == "Cast"]
    eager, graph = engine.create_execution_context(cuda_graph=False), engine.create_execution_context()
    tol = tolerance_for("fp16")
    for _ in range(3):
        x = torch.from_numpy(gen.uniform(-1, 1, (5, 64)).astype(np.float16)).cuda()
        want, got = eager.execute({"x": x})["y"], graph.execute({"x": x})["y"]
        assert got.dtype == torch.float16 and torch.equal(got, want)
        expected = torch.relu(x.float() @ torch.from_numpy(w1).cuda()) @ torch.from_numpy(w2).cuda()
        torch.testing.assert_close(got.float(), expected, rtol=tol.rtol, atol=tol.atol)
    assert graph._graphs.captured_signatures
    host = graph.execute({"x": x.cpu().numpy()})
    assert host["y"].dtype == np.float16 and np.array_equal(host["y"], want.cpu().numpy())
    with pytest.raises(ShapeError, match="input 'x' must be float16, got float32"):
        graph.execute({"x": x.float()})


@cuda
def test_static_input_buffers_skip_the_copy(rng):
    model = elementwise_model()
    ctx = _engine(model).create_execution_context()
    bufs = ctx.input_buffers({"x": (4, 4), "y": (4, 4)})
    assert set(bufs) == {"x", "y"} and bufs["x"].is_cuda
    for _ in range(4):
        feeds = _feeds(rng, 4)
        for k in "xy":
            bufs[k].copy_(torch.from_numpy(feeds[k]))
        out = ctx.execute(bufs)["z"]
        np.testing.assert_array_equal(out.cpu().numpy(), elementwise_expected(feeds["x"], feeds["y"], model))
    assert ctx.input_buffers({"x": (4, 4), "y": (4, 4)})["x"] is bufs["x"]


def _matmul_model(k: int = 2048) -> onnx.ModelProto:
    model = onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    mm (float[N,{k}] x) => (float[N,256] y) {{ y = MatMul(x, w) }}
    """)
    w = np.random.default_rng(1).standard_normal((k, 256)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(w, "w"))
    return model


@cuda
@pytest.mark.parametrize("use_graph", [False, True])
def test_outputs_come_back_dense_in_the_declared_layout(use_graph):
    """Outputs left strided (a Transpose view of an input) or channels_last (an NHWC convolution)
    are row-major when they reach the caller, from the eager path and from a graph's copy out."""
    transpose = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3,4,5] x) => (float[2,4,5,3] y) { y = Transpose <perm = [0, 2, 3, 1]> (x) }""")
    ctx = _engine(transpose, optimization_level=0).create_execution_context(cuda_graph=use_graph)
    for seed in range(3):  # warm-up, capture, replay
        x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(seed)).cuda()
        y = ctx.execute({"x": x})["y"]
        assert y.is_contiguous() and torch.equal(y, x.permute(0, 2, 3, 1))
    statics = [torch.randn(2, 8, 5, 5, device="cuda").to(memory_format=torch.channels_last)]
    for dtype in (None, torch.float16):
        (copied,) = cuda_graph.copy_out(statics, [dtype])
        assert copied.is_contiguous() and torch.equal(copied, statics[0].to(copied.dtype))


@cuda
@pytest.mark.parametrize("use_graph", [False, True])
def test_tf32_follows_the_engine_and_is_restored(use_graph):
    model = _matmul_model()
    w = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
    x = np.random.default_rng(2).standard_normal((128, 2048)).astype(np.float32)
    want = x.astype(np.float64) @ w
    errors = {}
    for tf32 in (True, False):
        ctx = _engine(model, tf32=tf32).create_execution_context(cuda_graph=use_graph)
        for user_setting in (True, False, True):
            torch.backends.cuda.matmul.allow_tf32 = user_setting
            torch.backends.cudnn.allow_tf32 = not user_setting
            out = ctx.execute({"x": torch.from_numpy(x).cuda()})["y"].cpu().numpy()
            assert torch.backends.cuda.matmul.allow_tf32 is user_setting
            assert torch.backends.cudnn.allow_tf32 is (not user_setting)
            errors.setdefault(tf32, []).append(float(np.max(np.abs(out - want)) / np.max(np.abs(want))))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    # FP32 accumulation of K=2048 is ~1e-6 relative; TF32's 10-bit mantissa ~1e-3.
    assert max(errors[False]) < 1e-4, errors
    assert min(errors[True]) > 1e-4, errors


@cuda
def test_index_tuple_ops_are_captured_in_cuda_graphs(rng):
    # GatherND and ScatterND bound their index tuples with the data's sizes as Python ints: a
    # tensor of them was copied from the host at every call, which made the capture fail and
    # the whole engine run eagerly.
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    nd (float[4,5,3] x, int64[6,2] i, float[6,3] u) => (float[6,3] g, float[4,5,3] s, float[4,5,3] a) {
        g = GatherND(x, i)
        s = ScatterND(x, i, u)
        a = ScatterND<reduction="add">(x, i, u)
    }
    """
    engine = _engine(onnx.parser.parse_model(text), optimization_level=0)
    ctx = engine.create_execution_context()
    for _ in range(4):
        x = rng.standard_normal((4, 5, 3)).astype(np.float32)
        cells = rng.permutation(20)[:6]
        i = np.stack([cells // 5, cells % 5], -1).astype(np.int64)
        i[0] -= [4, 5]  # a negative index counts from the end
        u = rng.standard_normal((6, 3)).astype(np.float32)
        out = ctx.execute({"x": torch.from_numpy(x).cuda(), "i": torch.from_numpy(i).cuda(),
                           "u": torch.from_numpy(u).cuda()})
        rows, cols = i[:, 0] % 4, i[:, 1] % 5
        replaced, added = x.copy(), x.copy()
        replaced[rows, cols] = u
        np.add.at(added, (rows, cols), u)
        np.testing.assert_array_equal(out["g"].cpu().numpy(), x[rows, cols])
        np.testing.assert_array_equal(out["s"].cpu().numpy(), replaced)
        np.testing.assert_allclose(out["a"].cpu().numpy(), added, rtol=1e-6, atol=1e-6)
    assert ctx.cuda_graph and not engine.cuda_graph_failure and not ctx.warnings, ctx.warnings


@cuda
def test_onnx_attention_reference_is_captured_in_cuda_graphs(rng):
    # ONNX Attention's reference scales Q and K by sqrt(scale) as a Python number: a device
    # tensor of it was copied from the host at every call, which made the capture fail.
    text = """
    <ir_version: 10, opset_import: ["" : 23]>
    att (float[2,3,8,16] q, float[2,3,8,16] k, float[2,3,8,16] v) => (float[2,3,8,16] y) { y = Attention(q, k, v) }
    """
    engine = _engine(onnx.parser.parse_model(text), optimization_level=0)
    ctx = engine.create_execution_context()
    tol = tolerance_for("tf32")  # TF32 is allowed on CUDA by default
    for _ in range(4):
        q, k, v = (rng.standard_normal((2, 3, 8, 16)).astype(np.float32) for _ in range(3))
        y = ctx.execute({n: torch.from_numpy(t).cuda() for n, t in zip("qkv", (q, k, v))})["y"].cpu().numpy()
        scores = q @ k.transpose(0, 1, 3, 2) / 4.0
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        expected = (weights / weights.sum(-1, keepdims=True)) @ v
        np.testing.assert_allclose(y, expected, rtol=tol.rtol, atol=tol.atol)
    assert ctx.cuda_graph and not engine.cuda_graph_failure and not ctx.warnings, ctx.warnings


@cuda
@pytest.mark.parametrize("opset, clip", [
    (6, "y = Clip<min=-0.5, max=0.75>(x)"),  # the bounds are attributes: host scalars
    (13, "y = Clip(x, lo, hi)"),  # the bounds are constant inputs
])
def test_clip_is_captured_in_cuda_graphs(rng, opset, clip):
    # Attribute bounds were copied to the device at every call, which made the capture fail.
    consts = "" if opset < 11 else "<float lo = {-0.5}, float hi = {0.75}>"
    text = f"""
    <ir_version: 8, opset_import: ["" : {opset}]>
    clip (float[64] x) => (float[64] y) {consts} {{ {clip} }}
    """
    engine = _engine(onnx.parser.parse_model(text), optimization_level=0)
    ctx = engine.create_execution_context()
    for _ in range(4):
        x = rng.standard_normal(64).astype(np.float32)
        y = ctx.execute({"x": torch.from_numpy(x).cuda()})["y"].cpu().numpy()
        np.testing.assert_array_equal(y, np.clip(x, -0.5, 0.75))
    assert ctx.cuda_graph and not engine.cuda_graph_failure and not ctx.warnings, ctx.warnings


@cuda
@pytest.mark.parametrize("value, dtype", [("float {0.25}", np.float32), ("uint64 {18446744073709551615}", np.uint64)])
def test_constant_of_shape_is_captured_in_cuda_graphs(rng, value, dtype):
    # The fill value was copied to the device at every call, which made the capture fail. 64 x 32
    # elements are too many for a host value: the layer runs on the device.
    out_type = "float" if dtype == np.float32 else "uint64"
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    fill (float[64,32] x) => (float[64,32] y, {out_type}[64,32] z) {{
        s = Shape(x)
        z = ConstantOfShape<value={value}>(s)
        y = Relu(x)
    }}
    """
    engine = _engine(onnx.parser.parse_model(text), optimization_level=0)
    ctx = engine.create_execution_context()
    for _ in range(4):
        x = rng.standard_normal((64, 32)).astype(np.float32)
        out = ctx.execute({"x": torch.from_numpy(x).cuda()})
        z = out["z"].cpu()
        expected = np.full((64, 32), 0.25 if dtype == np.float32 else np.iinfo(np.uint64).max, dtype)
        np.testing.assert_array_equal(z.view(torch.int64).numpy().view(dtype) if dtype == np.uint64 else z.numpy(),
                                      expected)
    assert ctx.cuda_graph and not engine.cuda_graph_failure and not ctx.warnings, ctx.warnings


@cuda
def test_capture_failure_falls_back_to_eager(rng):
    # NonZero's output size depends on the data: torch reads it back to the host, which a
    # capture does not allow.
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    nz (float[N] x) => (int64[1,M] y) { y = NonZero(x) }
    """
    engine = _engine(onnx.parser.parse_model(text), optimization_level=0)
    ctx = engine.create_execution_context()
    for _ in range(4):
        x = (rng.standard_normal(16) > 0).astype(np.float32)
        out = ctx.execute({"x": torch.from_numpy(x).cuda()})["y"]
        np.testing.assert_array_equal(out.cpu().numpy(), np.array(np.nonzero(x)))
    assert len(ctx.warnings) == 1 and "capture failed" in ctx.warnings[0], ctx.warnings
    assert not ctx.cuda_graph and engine.cuda_graph_failure
    # The engine remembers: a new context runs eagerly from the start.
    ctx2 = engine.create_execution_context()
    assert not ctx2.cuda_graph and "CUDA graphs are off" in ctx2.warnings[0]
    x = np.ones(5, np.float32)
    assert ctx2.execute({"x": torch.from_numpy(x).cuda()})["y"].shape == (1, 5)
    # Other work on the GPU still runs normally after the failed capture, on the caller's stream,
    # random ops included (torch leaves the generator in capture mode after a failed capture).
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert torch.equal(torch.ones(3, device="cuda") * 2, torch.full((3,), 2.0, device="cuda"))
    assert torch.randn(8, device="cuda").isfinite().all()


def _small_bert(batch: int = 8, seq: int = 256, **config):
    model = zoo.build("bert_encoder", layers=2, hidden=256, heads=4, intermediate=1024, vocab=1000,
                      max_position=512)
    feeds = _on(zoo.example_inputs(model, batch=batch, seq=seq))
    profile = OptimizationProfile.fixed({k: tuple(v.shape) for k, v in feeds.items()})
    return _engine(model, profiles=(profile,), **config), feeds


@cuda
def test_memory_plan_matches_the_caching_allocator():
    # The activations' plan (with the real tensor sizes of this run) against what one eager run
    # takes: the context's arena, allocated beforehand, and what the layers allocate themselves.
    engine, feeds = _small_bert(tf32=False)
    ctx = engine.create_execution_context(cuda_graph=False)
    _, record = ctx.execute_debug(feeds)
    sizes = {k: v.numel() * v.element_size() for k, v in record.items() if isinstance(v, torch.Tensor)}
    del record
    plan = plan_arena(engine.plan.graph, {}, nbytes_of=sizes)
    assert plan.complete
    out_bytes = sum(sizes[v.name] for v in engine.plan.graph.outputs)
    arena = engine.device_memory_size
    elsewhere = engine.plan.memory["arena_plan"]["elsewhere_peak_bytes"]
    assert arena > 0 and ctx.device_memory.numel() == arena
    measured = _allocated_by_one_run(ctx, feeds)
    # The same engine without its arena (as engines built before it run): every activation allocated.
    without = Runtime("cuda").load(dataclasses.replace(
        engine.plan, memory={k: v for k, v in engine.plan.memory.items() if k != "arena"}))
    measured_without = _allocated_by_one_run(without.create_execution_context(cuda_graph=False), feeds)
    print(f"\nall activations planned together {plan.size} B (peak live {plan.peak_live_bytes} B); arena {arena} B; "
          f"outside it {elsewhere} B at most; outputs {out_bytes} B; allocated during the run {measured} B "
          f"({measured_without} B without the arena)")
    # Everything the plan says is alive at once was alive at once, in the arena or allocated...
    assert arena + measured >= 0.95 * plan.peak_live_bytes
    assert measured_without >= 0.95 * plan.peak_live_bytes
    # ...and the run allocates only what is outside the arena: the activations of layers that allocate
    # their own, the outputs, and tactics' temporaries and workspaces (attention scores, cuBLAS workspaces).
    assert measured <= 3.0 * (elsewhere + out_bytes) + (8 << 20)
    assert measured_without <= 3.0 * (plan.size + out_bytes) + (8 << 20)
    assert measured < measured_without


def _allocated_by_one_run(ctx, feeds) -> int:
    for _ in range(2):
        ctx.execute(feeds)  # lazy workspaces (cuBLAS) allocated before measuring
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    outs = ctx.execute(feeds)
    torch.cuda.synchronize()
    del outs
    return torch.cuda.max_memory_allocated() - base


@cuda
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "cuda_graph"])
def test_activations_run_in_the_context_arena(graph):
    engine, feeds = _small_bert(batch=4, seq=64, fp16=True)
    want, _ = engine.create_execution_context(cuda_graph=False).execute_debug(feeds)  # no arena there
    assert engine.plan.memory["arena_plan"]["buffers"] > 0
    ctx = engine.create_execution_context(cuda_graph=graph)
    ctx.device_memory.fill_(0xFF)  # NaN in fp16: a value read from a place before it was written shows
    for _ in range(3):  # warm-up, capture, replay
        got = ctx.execute(feeds)
        for name, value in want.items():
            assert torch.equal(got[name], value), name
    assert (ctx.device_memory != 0xFF).any()
    # Contexts run one after another may share the caller's memory.
    shared = torch.empty(engine.device_memory_size, dtype=torch.uint8, device="cuda")
    first, second = (engine.create_execution_context(cuda_graph=graph, device_memory=shared) for _ in range(2))
    for ctx in (first, second, first, second, first):
        got = ctx.execute(feeds)
        assert all(torch.equal(got[name], value) for name, value in want.items())
    with pytest.raises(ConfigError, match="256-byte aligned"):
        engine.create_execution_context(device_memory=torch.empty(engine.device_memory_size + 256, dtype=torch.uint8,
                                                                  device="cuda")[16:])
    with pytest.raises(ConfigError, match="device_memory is on cpu"):
        engine.create_execution_context(device_memory=torch.empty(engine.device_memory_size, dtype=torch.uint8))


@cuda
def test_arena_calls_on_two_streams_are_ordered():
    # The arena is reused by every call: a call on another stream waits for the previous one.
    engine, feeds = _small_bert(batch=4, seq=64, fp16=True)
    ctx = engine.create_execution_context(cuda_graph=False)
    want = ctx.execute(feeds)
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    results = []
    for i in range(6):
        with torch.cuda.stream(streams[i % 2]):
            torch.cuda._sleep(200_000)  # the earlier call still running when the next is enqueued
            results.append(ctx.execute(feeds))
    torch.cuda.synchronize()
    for got in results:
        assert all(torch.equal(got[name], value) for name, value in want.items())


# ---- auxiliary streams ----------------------------------------------------------------------

def _fixed_profile(model: onnx.ModelProto, feeds: dict) -> tuple:
    from tensorkiln.builder.config import OptimizationProfile
    return (OptimizationProfile.fixed({k: v.shape for k, v in feeds.items()}),)


def _with_streams(plan, every_branch: bool):
    """A copy of the plan with every branch on an auxiliary stream, or with none."""
    import copy

    from tensorkiln.planner.streams import assign_streams, find_branches
    plan = copy.deepcopy(plan)
    stream_of, _ = assign_streams(plan.graph, find_branches(plan.graph), 4) if every_branch else (
        [0] * len(plan.graph.nodes), None)
    for node, stream in zip(plan.graph.nodes, stream_of):
        node.meta.pop("stream", None)
        if stream:
            node.meta["stream"] = stream
    return plan


@cuda
@pytest.mark.parametrize("name, streams", [("resnet50", 1), ("detector", 2)])
def test_aux_streams_give_the_one_stream_results(name, streams):
    """Branches on auxiliary streams, eagerly and replayed from a CUDA graph, give exactly what
    the same layers give on one stream, call after call with new inputs (a missing wait or a
    buffer reused too early shows as a difference)."""
    model = zoo.build(name, small=True)
    feeds = zoo.example_inputs(model, batch=1)
    plan = Builder(BuilderConfig(device="cuda", fp16=True, profiles=_fixed_profile(model, feeds))).build(
        parse_onnx(model))
    forked = Runtime("cuda").load(_with_streams(plan, True))
    single = Runtime("cuda").load(_with_streams(plan, False))
    assert forked.executor.schedule.aux_streams == streams and single.executor.schedule is None
    assert sum(1 for layer in forked.layers if layer["stream"]) >= streams
    for use_graph in (False, True):
        a = forked.create_execution_context(cuda_graph=use_graph)
        b = single.create_execution_context(cuda_graph=use_graph)
        assert a._streams is not None
        for seed in range(6):
            x = _on(zoo.example_inputs(model, batch=1, seed=seed))
            got, want = a.execute(x), b.execute(x)
            for k in want:
                assert torch.equal(got[k], want[k]), (name, use_graph, seed, k)
        assert a.warnings == b.warnings
        if use_graph:
            assert a.warnings == [] and a._graphs.captured_signatures


@cuda
def test_builder_keeps_a_stream_only_where_timed_faster(tmp_path):
    model = zoo.build("resnet50", small=True)
    feeds = zoo.example_inputs(model, batch=1)
    cache = str(tmp_path / "timing.cache")
    config = BuilderConfig(device="cuda", fp16=True, profiles=_fixed_profile(model, feeds), timing_cache_file=cache)
    plan = Builder(config).build(parse_onnx(model))
    report = plan.build_info["streams"]
    assert len(report["branches"]) == 4 and "skipped" not in report
    faster_whole = ("engine_one_stream_ms" in report
                    and report["engine_aux_streams_ms"] < report["engine_one_stream_ms"] * 0.995)
    for branch in report["branches"]:
        assert branch["one_stream_ms"] > 0 and branch["aux_stream_ms"] > 0 and not branch["from_cache"]
        faster_alone = branch["aux_stream_ms"] < branch["one_stream_ms"] * 0.97
        assert bool(branch.get("stream")) == (faster_alone and faster_whole), (branch, report)
        assert branch.get("stream") or branch["reason"]
        on_aux = [layer["stream"] for layer in plan.layers if layer["name"] in branch["side"]]
        assert on_aux == [branch.get("stream", 0)] * len(branch["side"])
    # A warm timing cache answers for every branch, and the same branches are kept.
    again = Builder(config).build(parse_onnx(model))
    assert all(b["from_cache"] for b in again.build_info["streams"]["branches"])
    assert [layer["stream"] for layer in again.layers] == [layer["stream"] for layer in plan.layers]
    none = Builder(config.with_changes(max_aux_streams=0)).build(parse_onnx(model))
    assert none.build_info["streams"]["skipped"] == "--maxAuxStreams=0"
    assert all(layer["stream"] == 0 for layer in none.layers)
