"""Sibling matrix products merged into one wider product and a Split (merge_sibling_gemms).

Checked: how often it fires on the query/key/value shape, the graph after it (one product
with the concatenated weights, a Split whose outputs are the siblings' outputs, the old
weights gone), numbers against onnxruntime through the whole pipeline, and the cases it
must leave alone.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx.parser
import pytest
import torch
from onnx import numpy_helper

from tensorkiln import Builder, BuilderConfig, Runtime
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import verify
from tensorkiln.ops import infer_graph_types
from tensorkiln.passes import PassContext
from tensorkiln.passes.pipeline import default_pipeline, run_pipeline
from tensorkiln.passes.sibling_gemms import MERGE, merge_sibling_gemms
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

# Query/key/value projections of a [B, S, 16] input, each with its bias, each read by a
# head split (Reshape + Transpose) and then combined: the attention layer's inputs.
QKV = """
<ir_version: 8, opset_import: ["" : 17]>
qkv (float[B, 6, 16] x) => (float[B, 2, 6, 8] y)
{
    q0 = MatMul(x, wq)
    q = Add(q0, bq)
    k0 = MatMul(x, wk)
    k = Add(k0, bk)
    v0 = MatMul(x, wv)
    v = Add(v0, bv)
    qh = Reshape(q, shape)
    kh = Reshape(k, shape)
    vh = Reshape(v, shape)
    qt = Transpose<perm = [0, 2, 1, 3]>(qh)
    kt = Transpose<perm = [0, 2, 3, 1]>(kh)
    vt = Transpose<perm = [0, 2, 1, 3]>(vh)
    s = MatMul(qt, kt)
    p = Softmax<axis = -1>(s)
    y = MatMul(p, vt)
}
"""


def _model(text: str, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    m = onnx.parser.parse_model(text)
    for name, w in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(w, name))
    return m


def _qkv_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    w = {f"w{c}": (rng.standard_normal((16, 16)) / 4).astype(np.float32) for c in "qkv"}
    w.update({f"b{c}": rng.standard_normal(16).astype(np.float32) for c in "qkv"})
    w["shape"] = np.array([0, 6, 2, 8], np.int64)
    return w


def _optimize(m: onnx.ModelProto):
    graph, reports = run_pipeline(infer_graph_types(parse_onnx(m)), default_pipeline(3), debug=True)
    return graph, {r.name: r for r in reports}


def test_qkv_projections_become_one_product_and_a_split():
    rng = np.random.default_rng(0)
    weights = _qkv_weights(rng)
    m = _model(QKV, weights)
    graph, reports = _optimize(m)
    ops = Counter(n.op_type for n in graph.nodes)
    assert ops["FusedMatMul"] == 1 and ops["Split"] == 1, ops
    merged = next(n for n in graph.nodes if n.op_type == "FusedMatMul")
    np.testing.assert_array_equal(merged.inputs[1].const,
                                  np.concatenate([weights["wq"], weights["wk"], weights["wv"]], axis=1))
    np.testing.assert_array_equal(merged.inputs[2].const,
                                  np.concatenate([weights["bq"], weights["bk"], weights["bv"]]))
    split = next(n for n in graph.nodes if n.op_type == "Split")
    assert split.inputs[0] is merged.outputs[0] and split.attrs["split"] == [16, 16, 16]
    assert not {"wq", "wk", "wv", "bq", "bk", "bv"} & {v.name for v in graph.initializers}
    assert reports["merge_sibling_gemms"].rewrites == {MERGE: 1}
    x = rng.standard_normal((3, 6, 16)).astype(np.float32)
    got = Runtime().load(Builder(BuilderConfig()).build(parse_onnx(m))).create_execution_context().execute({"x": x})
    assert_close(got["y"], run_onnxruntime(m, {"x": x})["y"], "fp32", what="y")


def test_split_outputs_are_views_of_the_merged_product():
    # The head split after the merge reads column slices without copying them.
    m = _model(QKV, _qkv_weights(np.random.default_rng(1)))
    plan = Builder(BuilderConfig()).build(parse_onnx(m))
    x = torch.randn(2, 6, 16)
    _, layers = Runtime().load(plan).create_execution_context().execute_debug({"x": x})
    split = next(n for n in plan.graph.nodes if n.op_type == "Split")
    merged = layers[split.inputs[0].name]
    for v in split.outputs:
        assert layers[v.name].untyped_storage().data_ptr() == merged.untyped_storage().data_ptr()


SIBLINGS = """
<ir_version: 8, opset_import: ["" : 17]>
siblings (float[4, 16] x, float[16, 8] w_in) => (float[4, 8] a, float[4, 8] b, float[4, 8] c, float[4, 8] d,
                                                float[4, 8] e)
{
    a0 = MatMul(x, w1)
    ra = Relu(a0)
    a = Mul(ra, ra)
    b0 = MatMul(x, w2)
    rb = Sigmoid(b0)
    b = Mul(rb, rb)
    c0 = MatMul(x, w3)
    rc = Relu(c0)
    c = Mul(rc, rc)
    d = MatMul(x, w4)
    e0 = MatMul(x, w_in)
    re = Relu(e0)
    e = Mul(re, re)
}
"""


def test_only_matching_siblings_merge():
    # a and c merge (both Relu, constant weights); b has another activation; d is a graph
    # output (it keeps its own buffer); e's weight is a graph input, not a constant.
    rng = np.random.default_rng(2)
    weights = {f"w{i}": rng.standard_normal((16, 8)).astype(np.float32) for i in range(1, 5)}
    m = _model(SIBLINGS, weights)
    graph, reports = _optimize(m)
    ops = Counter(n.op_type for n in graph.nodes)
    assert ops["Split"] == 1, ops
    split = next(n for n in graph.nodes if n.op_type == "Split")
    assert [v.name for v in split.outputs] == ["ra", "rc"]
    assert reports["merge_sibling_gemms"].rewrites == {MERGE: 1}
    feeds = {"x": rng.standard_normal((4, 16)).astype(np.float32),
             "w_in": rng.standard_normal((16, 8)).astype(np.float32)}
    got = Runtime().load(Builder(BuilderConfig()).build(graph)).create_execution_context().execute(feeds)
    want = run_onnxruntime(m, feeds)
    for name in "abcde":
        assert_close(got[name], want[name], "fp32", what=name)


def test_pass_alone_keeps_the_graph_valid():
    m = _model(QKV, _qkv_weights(np.random.default_rng(3)))
    graph = infer_graph_types(parse_onnx(m))
    ctx = PassContext()
    graph = merge_sibling_gemms(graph, ctx)
    infer_graph_types(graph)
    verify(graph)
    # Before epilogue fusion the products are plain MatMuls: they merge as such.
    assert Counter(n.op_type for n in graph.nodes)["MatMul"] == 3  # the merged one + the two attention products
    assert ctx.rewrites == {MERGE: 1}
