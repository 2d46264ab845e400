"""Concat elimination (sibling merging and the trivial cases) and elementwise-chain fusion.

Each rewrite is checked for how many times it fires, what the graph looks like after it,
numeric equality with onnxruntime at the precision's tolerance, and cases it must refuse
(with the reason it reports).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

import tensorkiln
from tensorkiln import Builder, Runtime
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import DType, Graph, Node, TensorType, Value, verify
from tensorkiln.ops import get_op, infer_graph_types
from tensorkiln.passes import PassContext
from tensorkiln.passes.concat_elimination import eliminate_concats
from tensorkiln.passes.elementwise_chains import fuse_elementwise_chains
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

CHAIN = "ElementwiseChain"


def model(text: str, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    m = onnx.parser.parse_model(text)
    for name, w in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(w, name))
    return m


def optimize(m: onnx.ModelProto, *passes) -> tuple[Graph, list[PassContext]]:
    graph = infer_graph_types(parse_onnx(m))
    contexts = []
    for p in passes:
        ctx = PassContext()
        graph = p(graph, ctx)
        infer_graph_types(graph)
        verify(graph)
        contexts.append(ctx)
    return graph, contexts


def run_graph(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return Runtime().load(Builder().build(graph)).create_execution_context().execute(feeds)


def check_against_ort(m: onnx.ModelProto, graph: Graph, feeds: dict[str, np.ndarray], precision: str = "fp32") -> None:
    want = run_onnxruntime(m, feeds)
    got = run_graph(graph, feeds)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert_close(got[name], want[name], precision, what=name)


def ops(graph: Graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


def declines(ctx: PassContext) -> str:
    return "\n".join(reason for _, _, reason in ctx.declines)


def rand(rng, *shape, dtype=np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


# ---- concat: merging sibling convolutions ----------------------------------------------------

TWO_CONVS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,24,24] x) => (float[1,8,24,24] y) {
    a = Conv <pads = [1,1,1,1]> (x, wa, ba)
    b = Conv <pads = [1,1,1,1]> (x, wb, bb)
    y = Concat <axis = 1> (a, b)
}
"""


def two_convs(rng) -> onnx.ModelProto:
    return model(TWO_CONVS, {"wa": rand(rng, 3, 4, 3, 3), "ba": rand(rng, 3), "wb": rand(rng, 5, 4, 3, 3),
                             "bb": rand(rng, 5)})


def test_seed_example_two_convs_of_3_and_5_channels_become_one_conv_of_8(rng):
    m = two_convs(rng)
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ctx.rewrites == {"concat_merge_siblings": 1}
    assert ops(graph) == ["Conv"]
    conv = graph.nodes[0]
    assert conv.outputs[0] is graph.outputs[0] and conv.outputs[0].name == "y"
    assert conv.inputs[0].name == "x"
    assert conv.inputs[1].const.shape == (8, 4, 3, 3) and conv.inputs[2].const.shape == (8,)
    assert graph.outputs[0].shape == (1, 8, 24, 24)
    # The branches' weights are gone from the graph; only the merged ones remain.
    assert sorted(v.const.shape for v in graph.initializers) == [(8,), (8, 4, 3, 3)]
    check_against_ort(m, graph, {"x": rand(rng, 1, 4, 24, 24)})


def test_conv_without_bias_merges_with_conv_with_bias(rng):
    text = TWO_CONVS.replace("Conv <pads = [1,1,1,1]> (x, wa, ba)", "Conv <pads = [1,1,1,1]> (x, wa)")
    m = model(text, {"wa": rand(rng, 3, 4, 3, 3), "wb": rand(rng, 5, 4, 3, 3), "bb": rand(rng, 5)})
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ops(graph) == ["Conv"]
    np.testing.assert_array_equal(graph.nodes[0].inputs[2].const[:3], 0)
    check_against_ort(m, graph, {"x": rand(rng, 1, 4, 24, 24)})


BRANCHES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,4,10,10] x, float[2,6,10,10] z) => (float[2,17,10,10] y) {
    a = Conv <strides = [1,1], pads = [0,0,0,0]> (x, wa, ba)
    ar = Relu(a)
    as = Mul(ar, sa)
    at = Add(as, ta)
    b = Conv <strides = [1,1], pads = [0,0,0,0]> (x, wb, bb)
    br = Relu(b)
    bs = Mul(br, sb)
    bt = Add(bs, tb)
    c = Conv <pads = [0,0,0,0]> (x, wc)
    cr = Relu(c)
    cs = Mul(cr, sc)
    ct = Add(cs, tc)
    y = Concat <axis = 1> (at, bt, ct, z)
}
"""


def test_branches_with_per_channel_tails_merge_and_the_concat_keeps_the_other_input(rng):
    # Conv -> Relu -> Mul(per-channel scale) -> Add(scalar or per-channel shift), three times, then an
    # unrelated tensor: the three branches become one chain of 8 channels, the concat keeps z.
    weights = {"wa": rand(rng, 3, 4, 1, 1), "ba": rand(rng, 3), "sa": rand(rng, 3, 1, 1), "ta": rand(rng, 1),
               "wb": rand(rng, 5, 4, 1, 1), "bb": rand(rng, 5), "sb": rand(rng, 1, 5, 1, 1), "tb": rand(rng, 5, 1, 1),
               "wc": rand(rng, 3, 4, 1, 1), "sc": np.float32(2.0).reshape(()), "tc": rand(rng, 3, 1, 1)}
    m = model(BRANCHES, weights)
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ctx.rewrites == {"concat_merge_siblings": 1}
    assert ops(graph) == ["Conv", "Relu", "Mul", "Add", "Concat"]
    conv, relu, mul, add, concat = graph.nodes
    assert conv.inputs[1].const.shape == (11, 4, 1, 1)
    assert mul.inputs[1].const.shape == (11, 1, 1) and add.inputs[1].const.shape == (11, 1, 1)
    assert [v.name for v in concat.inputs][1] == "z" and concat.inputs[0] is add.outputs[0]
    assert concat.outputs[0].name == "y"
    check_against_ort(m, graph, {"x": rand(rng, 2, 4, 10, 10), "z": rand(rng, 2, 6, 10, 10)})


INCEPTION = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,12,12] x) => (float[1,9,12,12] y) {
    a = Conv <pads = [1,1,1,1]> (x, wa)
    b = Conv <pads = [1,1,1,1]> (x, wb)
    ab = Concat <axis = 1> (a, b)
    c = Conv <pads = [1,1,1,1]> (x, wc)
    y = Concat <axis = -3> (ab, c)
}
"""


def test_nested_concats_merge_all_the_way(rng):
    m = model(INCEPTION, {"wa": rand(rng, 2, 3, 3, 3), "wb": rand(rng, 3, 3, 3, 3), "wc": rand(rng, 4, 3, 3, 3)})
    graph, (ctx,) = optimize(m, eliminate_concats)
    # The inner concat merges into one conv, which merges again with the third one.
    assert ctx.rewrites == {"concat_merge_siblings": 2}
    assert ops(graph) == ["Conv"] and graph.nodes[0].inputs[1].const.shape == (9, 3, 3, 3)
    check_against_ort(m, graph, {"x": rand(rng, 1, 3, 12, 12)})


# ---- concat: merging sibling matrix products -------------------------------------------------

GEMMS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[6,8] a) => (float[6,12] y) {
    p = Gemm <alpha = 0.5, beta = 2.0, transB = 1> (a, b1, c1)
    q = Gemm <alpha = 0.5, beta = 2.0, transB = 1> (a, b2, c2)
    r = Gemm <alpha = 0.5, beta = 2.0, transB = 1> (a, b3)
    y = Concat <axis = 1> (p, q, r)
}
"""


def test_gemms_merge_with_every_form_of_c(rng):
    m = model(GEMMS, {"b1": rand(rng, 4, 8), "c1": rand(rng, 4), "b2": rand(rng, 5, 8), "c2": rand(rng, 6, 5),
                      "b3": rand(rng, 3, 8)})
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ctx.rewrites == {"concat_merge_siblings": 1}
    assert ops(graph) == ["Gemm"]
    gemm = graph.nodes[0]
    assert gemm.inputs[1].const.shape == (12, 8) and gemm.inputs[2].const.shape == (6, 12)
    assert gemm.attrs["alpha"] == 0.5 and gemm.attrs["transB"] == 1
    check_against_ort(m, graph, {"a": rand(rng, 6, 8)})


MATMULS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,5,8] a) => (float[2,5,10] y) {
    p = MatMul(a, b1)
    pg = Gelu(p)
    q = MatMul(a, b2)
    qg = Gelu(q)
    y = Concat <axis = -1> (pg, qg)
}
"""


def test_matmuls_with_a_tail_merge_along_the_last_axis(rng):
    text = MATMULS.replace('"" : 17', '"" : 20')
    m = model(text, {"b1": rand(rng, 8, 4), "b2": rand(rng, 8, 6)})
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ops(graph) == ["MatMul", "Gelu"] and graph.nodes[0].inputs[1].const.shape == (8, 10)
    assert graph.nodes[1].outputs[0].name == "y"
    check_against_ort(m, graph, {"a": rand(rng, 2, 5, 8)})


def test_fp16_convs_merge(rng):
    text = TWO_CONVS.replace("float", "float16")
    m = model(text, {"wa": rand(rng, 3, 4, 3, 3, dtype=np.float16), "ba": rand(rng, 3, dtype=np.float16),
                     "wb": rand(rng, 5, 4, 3, 3, dtype=np.float16), "bb": rand(rng, 5, dtype=np.float16)})
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ops(graph) == ["Conv"] and graph.nodes[0].inputs[1].const.dtype == np.float16
    check_against_ort(m, graph, {"x": rand(rng, 1, 4, 24, 24, dtype=np.float16)}, "fp16")


# ---- concat: what must not merge ---------------------------------------------------------------

NOT_MERGED = [
    ("different input",
     TWO_CONVS.replace("(float[1,4,24,24] x)", "(float[1,4,24,24] x, float[1,4,24,24] x2)")
              .replace("(x, wb, bb)", "(x2, wb, bb)"),
     "read different inputs ('x', 'x2')"),
    ("different attributes",
     TWO_CONVS.replace("b = Conv <pads = [1,1,1,1]>", "b = Conv <pads = [1,1,1,1], dilations = [1,1]>")
              .replace("a = Conv <pads = [1,1,1,1]>", "a = Conv <pads = [2,2,0,0]>"),
     "differ (pads: [2, 2, 0, 0] vs [1, 1, 1, 1])"),
    ("non-constant weights",
     TWO_CONVS.replace("(float[1,4,24,24] x)", "(float[1,4,24,24] x, float[5,4,3,3] wb)"),
     "weights 'wb' of 'Conv_1' is not a constant"),
    ("concat axis is not the channel axis",
     TWO_CONVS.replace("Concat <axis = 1>", "Concat <axis = 2>").replace("float[1,8,24,24] y", "float[1,3,48,24] y")
              .replace("(x, wb, bb)", "(x, wa, ba)"),
     "concat axis 2 is not the output-channel axis 1 of Conv"),
    ("branch output read elsewhere",
     TWO_CONVS.replace("=> (float[1,8,24,24] y)", "=> (float[1,8,24,24] y, float[1,5,24,24] e)")
              .replace("y = Concat", "e = Relu(b)\n    y = Concat"),
     "'b' is also read by 'Relu_"),
    ("branch output is a graph output",
     TWO_CONVS.replace("=> (float[1,8,24,24] y)", "=> (float[1,8,24,24] y, float[1,3,24,24] a)"),
     "'a' is a graph output"),
]


@pytest.mark.parametrize("text,reason", [pytest.param(t, r, id=i) for i, t, r in NOT_MERGED])
def test_concat_not_merged(rng, text, reason):
    weights = {"wa": rand(rng, 3, 4, 3, 3), "ba": rand(rng, 3), "wb": rand(rng, 5, 4, 3, 3), "bb": rand(rng, 5)}
    m = onnx.parser.parse_model(text)
    inputs = {i.name for i in m.graph.input}
    m = model(text, {k: w for k, w in weights.items() if k not in inputs})
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ctx.rewrites == {} and "Concat" in ops(graph)
    assert reason in declines(ctx), declines(ctx)
    feeds = {i.name: rand(rng, *[d.dim_value for d in i.type.tensor_type.shape.dim]) for i in m.graph.input}
    check_against_ort(m, graph, feeds)


def test_branch_tails_that_differ_do_not_merge(rng):
    text = BRANCHES.replace("bs = Mul(br, sb)", "bs = Div(br, sb)")
    weights = {"wa": rand(rng, 3, 4, 1, 1), "ba": rand(rng, 3), "sa": rand(rng, 3, 1, 1), "ta": rand(rng, 1),
               "wb": rand(rng, 5, 4, 1, 1), "bb": rand(rng, 5), "sb": rand(rng, 5, 1, 1), "tb": rand(rng, 5, 1, 1),
               # A constant that varies along the width is not one value per channel.
               "wc": rand(rng, 3, 4, 1, 1), "sc": rand(rng, 3, 1, 1), "tc": rand(rng, 1, 1, 10)}
    m = model(BRANCHES, weights)
    m2 = model(text, weights)
    for mm, reason in ((m, "constant 'tc' [1, 1, 10] of 'Add_11' is not one value per channel"),
                       (m2, "branches differ (Conv->Relu->Mul->Add vs Conv->Relu->Div->Add)")):
        graph, (ctx,) = optimize(mm, eliminate_concats)
        assert reason in declines(ctx), declines(ctx)
        check_against_ort(mm, graph, {"x": rand(rng, 2, 4, 10, 10), "z": rand(rng, 2, 6, 10, 10)})
    # In the first model, a and b still merge; c stays a branch of its own.
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ctx.rewrites == {"concat_merge_siblings": 1}
    assert ops(graph).count("Conv") == 2


def test_grouped_conv_does_not_merge(rng):
    text = TWO_CONVS.replace("Conv <pads = [1,1,1,1]>", "Conv <pads = [1,1,1,1], group = 2>")
    m = model(text, {"wa": rand(rng, 4, 2, 3, 3), "ba": rand(rng, 4), "wb": rand(rng, 4, 2, 3, 3), "bb": rand(rng, 4)})
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ctx.rewrites == {} and "grouped convolution (group=2)" in declines(ctx)


# ---- concat: the trivial cases -----------------------------------------------------------------

def test_single_input_concat_disappears(rng):
    m = model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x) => (float[2,3] y, float[2,3] z) {
    r = Relu(x)
    c = Concat <axis = 0> (r)
    y = Sigmoid(c)
    z = Concat <axis = 1> (r)
}
""", {})
    graph, (ctx,) = optimize(m, eliminate_concats)
    # 'c' is read by Sigmoid, which now reads 'r'; 'z' is a graph output, so Relu writes it directly
    # (and Sigmoid reads it under that name).
    assert ctx.rewrites == {"concat_single_input": 2}
    assert ops(graph) == ["Relu", "Sigmoid"]
    relu, sigmoid = graph.nodes
    assert relu.outputs[0] is graph.outputs[1] and relu.outputs[0].name == "z" and sigmoid.inputs[0] is relu.outputs[0]
    check_against_ort(m, graph, {"x": rand(rng, 2, 3)})


def test_single_input_concat_writing_a_graph_output_renames_its_producer(rng):
    m = model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x) => (float[2,3] z, float[2,3] w) {
    r = Relu(x)
    z = Concat <axis = 1> (r)
    w = Concat <axis = 0> (x)
}
""", {})
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ctx.rewrites == {"concat_single_input": 1}
    assert ops(graph) == ["Relu", "Concat"] and graph.nodes[0].outputs[0].name == "z"
    assert "'w' is a graph output and its input 'x' is a graph input or constant" in declines(ctx)
    check_against_ort(m, graph, {"x": rand(rng, 2, 3)})


def test_empty_inputs_are_dropped(rng):
    m = model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x, float[2,0] e) => (float[2,6] y) {
    r = Relu(x)
    y = Concat <axis = 1> (e, r, x)
}
""", {})
    graph, (ctx,) = optimize(m, eliminate_concats)
    assert ctx.rewrites == {"concat_drop_empty": 1}
    assert [v.name for v in graph.nodes[-1].inputs] == ["r", "x"]
    check_against_ort(m, graph, {"x": rand(rng, 2, 3), "e": np.zeros((2, 0), np.float32)})


# ---- elementwise chains ------------------------------------------------------------------------

CHAIN_MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3,4] x, float[3,1] s) => (float[2,3,4] y) {
    a = Add(x, bias)
    b = Mul(a, s)
    c = Sub(half, b)
    d = Sigmoid(c)
    e = Clip(d, lo, hi)
    f = LeakyRelu <alpha = 0.2> (e)
    g = Pow(f, two)
    y = Div(g, scale)
}
"""


def chain_model(rng, dtype=np.float32) -> onnx.ModelProto:
    text = CHAIN_MODEL.replace("float", "float16") if dtype == np.float16 else CHAIN_MODEL
    return model(text, {"bias": rand(rng, 4, dtype=dtype), "half": np.array([0.5], dtype),
                        "lo": np.array(0.1, dtype), "hi": np.array(0.8, dtype), "two": np.array(2.0, dtype),
                        "scale": (rand(rng, 1, 3, 1, dtype=dtype) ** 2 + 1).astype(dtype)})


def test_chain_of_eight_becomes_one_layer(rng):
    m = chain_model(rng)
    graph, (ctx,) = optimize(m, fuse_elementwise_chains)
    assert ctx.rewrites == {"elementwise_chain": 1}
    assert ops(graph) == [CHAIN]
    layer = graph.nodes[0]
    assert layer.domain == "tensorkiln" and layer.outputs[0] is graph.outputs[0]
    program = layer.attrs["program"]
    assert [s["op"] for s in program] == ["Add", "Mul", "Sub", "Sigmoid", "Clip", "LeakyRelu", "Pow", "Div"]
    # Non-scalar constants and tensors are inputs; one-element constants are written inline.
    assert [v.name for v in layer.inputs] == ["x", "bias", "s", "scale"]
    assert program[2]["args"] == [{"const": 0.5, "dtype": "float32", "shape": [1]}, {"prev": 1}]
    assert program[4]["args"][1:] == [{"const": pytest.approx(0.1), "dtype": "float32", "shape": []},
                                      {"const": pytest.approx(0.8), "dtype": "float32", "shape": []}]
    assert program[5]["attrs"] == {"alpha": pytest.approx(0.2)}
    assert get_op(CHAIN, "tensorkiln").check(layer) is None
    check_against_ort(m, graph, {"x": rand(rng, 2, 3, 4), "s": rand(rng, 3, 1)})


def test_chain_broadcasting_grows_the_output_like_the_original(rng):
    # The running value is [4] until a [3,1] tensor and then a [2,1,1] constant broadcast it up.
    m = model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[4] x, float[3,1] s) => (float[2,3,4] y) {
    a = Exp(x)
    b = Add(s, a)
    y = Mul(b, k)
}
""", {"k": rand(rng, 2, 1, 1)})
    graph, (ctx,) = optimize(m, fuse_elementwise_chains)
    assert ops(graph) == [CHAIN] and graph.outputs[0].shape == (2, 3, 4)
    assert graph.nodes[0].attrs["program"][1]["args"] == [{"input": 1}, {"prev": 1}]
    check_against_ort(m, graph, {"x": rand(rng, 4), "s": rand(rng, 3, 1)})


def test_fp16_chain(rng):
    m = chain_model(rng, np.float16)
    graph, (ctx,) = optimize(m, fuse_elementwise_chains)
    assert ops(graph) == [CHAIN] and graph.outputs[0].dtype == tensorkiln.DType.FLOAT16
    assert graph.nodes[0].attrs["program"][2]["args"][0] == {"const": 0.5, "dtype": "float16", "shape": [1]}
    check_against_ort(m, graph, {"x": rand(rng, 2, 3, 4, dtype=np.float16), "s": rand(rng, 3, 1, dtype=np.float16)},
                      "fp16")


def test_swish_reads_its_input_twice_through_one_layer_input(rng):
    m = model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[8] x) => (float[8] y) {
    s = Sigmoid(x)
    m = Mul(x, s)
    y = Mul(m, m)
}
""", {})
    graph, (ctx,) = optimize(m, fuse_elementwise_chains)
    assert ops(graph) == [CHAIN] and [v.name for v in graph.nodes[0].inputs] == ["x"]
    assert graph.nodes[0].attrs["program"][2]["args"] == [{"prev": 1}, {"prev": 1}]
    check_against_ort(m, graph, {"x": rand(rng, 8)})


def test_chain_stops_at_a_shared_intermediate_and_at_a_graph_output(rng):
    m = model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,5] x) => (float[2,5] y, float[2,5] t, float[2,5] u) {
    a = Relu(x)
    b = Neg(a)
    t = Exp(b)
    c = Abs(t)
    d = Sqrt(c)
    u = Tanh(a)
    e = Sigmoid(d)
    y = Max(e, x)
}
""", {})
    graph, (ctx,) = optimize(m, fuse_elementwise_chains)
    # Relu's output is read twice; 't' is a graph output: the chains are Neg->Exp and Abs->Sqrt->Sigmoid->Max.
    assert ctx.rewrites == {"elementwise_chain": 2}
    assert ops(graph) == ["Relu", CHAIN, "Tanh", CHAIN]
    assert graph.nodes[1].outputs[0].name == "t" and graph.nodes[3].outputs[0].name == "y"
    text = declines(ctx)
    assert "'a' is read by 2 layers ('Neg_1', 'Tanh_5'), so the chain ends at 'Relu_0'" in text
    assert "'t' is a graph output, so the chain ends at 'Exp_2'" in text
    check_against_ort(m, graph, {"x": rand(rng, 2, 5)})


def test_chain_layer_takes_the_place_of_its_last_op(rng):
    # The Add reads a tensor computed after the chain starts: the chain layer must come after it.
    m = model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,5] x, float[2,5] z) => (float[2,5] y) {
    a = Relu(x)
    w = Softmax(z)
    b = Add(a, w)
    y = Tanh(b)
}
""", {})
    graph, (ctx,) = optimize(m, fuse_elementwise_chains)
    assert ops(graph) == ["Softmax", CHAIN] and [v.name for v in graph.nodes[1].inputs] == ["x", "w"]
    check_against_ort(m, graph, {"x": rand(rng, 2, 5), "z": rand(rng, 2, 5)})


def test_not_grouped_single_ops_and_non_constant_clip_bounds(rng):
    m = model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[6] x, float lo) => (float[6] y) {
    a = Relu(x)
    b = Clip(a, lo)
    y = Softmax(b)
}
""", {})
    graph, (ctx,) = optimize(m, fuse_elementwise_chains)
    assert ctx.rewrites == {} and ops(graph) == ["Relu", "Clip", "Softmax"]
    assert "Clip bound 'lo' is not a constant" in declines(ctx)


def test_chain_runs_after_concat_elimination_in_one_pipeline(rng):
    weights = {"wa": rand(rng, 3, 4, 1, 1), "ba": rand(rng, 3), "sa": rand(rng, 3, 1, 1), "ta": rand(rng, 1),
               "wb": rand(rng, 5, 4, 1, 1), "bb": rand(rng, 5), "sb": rand(rng, 1, 5, 1, 1), "tb": rand(rng, 5, 1, 1),
               "wc": rand(rng, 3, 4, 1, 1), "sc": np.float32(2.0).reshape(()), "tc": rand(rng, 3, 1, 1)}
    m = model(BRANCHES, weights)
    graph, _ = optimize(m, eliminate_concats, fuse_elementwise_chains)
    assert ops(graph) == ["Conv", CHAIN, "Concat"]
    assert [s["op"] for s in graph.nodes[1].attrs["program"]] == ["Relu", "Mul", "Add"]
    check_against_ort(m, graph, {"x": rand(rng, 2, 4, 10, 10), "z": rand(rng, 2, 6, 10, 10)})


def test_chain_does_not_modify_its_inputs_and_debug_tensors_survive(rng):
    m = model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[3,4] x) => (float[3,4] y) {
    a = Relu(x)
    y = Add(a, x)
}
""", {})
    graph, _ = optimize(m, fuse_elementwise_chains)
    x = rand(rng, 3, 4)
    before = x.copy()
    ctx = Runtime().load(Builder().build(graph)).create_execution_context()
    out, layers = ctx.execute_debug({"x": x})
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(out["y"], np.maximum(before, 0) + before, rtol=1e-6)


# ---- engine file roundtrip ---------------------------------------------------------------------

def test_engine_file_roundtrip_of_merged_conv_and_chain(rng, tmp_path):
    weights = {"wa": rand(rng, 3, 4, 1, 1), "ba": rand(rng, 3), "sa": rand(rng, 3, 1, 1), "ta": rand(rng, 1),
               "wb": rand(rng, 5, 4, 1, 1), "bb": rand(rng, 5), "sb": rand(rng, 1, 5, 1, 1), "tb": rand(rng, 5, 1, 1),
               "wc": rand(rng, 3, 4, 1, 1), "sc": np.float32(2.0).reshape(()), "tc": rand(rng, 3, 1, 1)}
    m = model(BRANCHES, weights)
    graph, _ = optimize(m, eliminate_concats, fuse_elementwise_chains)
    plan = Builder().build(graph)
    feeds = {"x": rand(rng, 2, 4, 10, 10), "z": rand(rng, 2, 6, 10, 10)}
    direct = Runtime().load(plan).create_execution_context().execute(feeds)
    data = plan.serialize()
    engine = Runtime().load(data)
    assert [layer["op"] for layer in engine.layers] == ["Conv", CHAIN, "Concat"]
    loaded = engine.create_execution_context().execute(feeds)
    np.testing.assert_array_equal(loaded["y"], direct["y"])
    assert_close(loaded["y"], run_onnxruntime(m, feeds)["y"], "fp32")
    # Also through a file, and for the fp16 chain with inline fp16 constants.
    m16 = chain_model(rng, np.float16)
    g16, _ = optimize(m16, fuse_elementwise_chains)
    path = tmp_path / "chain.plan"
    Builder().build(g16).save(str(path))
    feeds16 = {"x": rand(rng, 2, 3, 4, dtype=np.float16), "s": rand(rng, 3, 1, dtype=np.float16)}
    got = Runtime().load(path).create_execution_context().execute(feeds16)
    assert got["y"].dtype == np.float16
    assert_close(got["y"], run_onnxruntime(m16, feeds16)["y"], "fp16")


def test_chain_op_check_reports_a_broken_program():
    op = get_op(CHAIN, "tensorkiln")
    x = Value("x", TensorType(DType.FLOAT32, (2,)))
    bad = [
        ([], "non-empty list"),
        ([{"op": "Relu", "args": [{"prev": 1}]}], "it is the first step"),
        ([{"op": "Relu", "args": [{"input": 0}]}, {"op": "Neg", "args": [{"input": 0}]}], "does not read the previous"),
        ([{"op": "Relu", "args": [{"input": 3}]}], "reads input 3, but the layer has 1"),
        ([{"op": "NoSuchOp", "args": [{"input": 0}]}], "unknown op 'NoSuchOp'"),
    ]
    for program, reason in bad:
        node = Node(CHAIN, [x], [Value("y")], {"program": program}, name="c", domain="tensorkiln")
        assert reason in (op.check(node) or ""), program
