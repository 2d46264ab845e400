"""A merged Q/K/V projection fused into the attention that reads it (fuse_projected_attention), and the
tensorkiln::ProjectedAttention op it makes.

Checked: the fused graph (one layer reading x and the merged weight; the product, its Split and the
head-split views gone), the fused layer's numbers on the CPU against onnxruntime on the original model,
the cases it must leave alone (the device declines, a third of the projection read elsewhere, a
projection with an activation), that a CPU build never fuses, and the op's own checks and reference.
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
from tensorkiln.ir import DType, Node, TensorType, Value, verify
from tensorkiln.ops import get_op, infer_graph_types
from tensorkiln.ops.infer import infer_node
from tensorkiln.ops.projected_attention import pack_heads
from tensorkiln.passes import PassContext
from tensorkiln.passes.pipeline import default_pipeline, run_pipeline
from tensorkiln.passes.projected_attention import fuse_projected_attention
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

# A BERT attention block: Q/K/V projections of x [B, S, E] (E = H heads of D), each with its bias and head
# split, scaled scores plus a padding mask, softmax, and the heads merged back.
BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
block (float[{batch}, {seq}, {embed}] x, float[{batch}, 1, 1, {seq}] mask) => (float[{batch}, {seq}, {embed}] y{extra})
{{
    q0 = MatMul(x, wq)
    q = Add(q0, bq)
    k0 = MatMul(x, wk)
    k = Add(k0, bk)
    v0 = MatMul(x, wv)
    v = Add(v0, bv){extra_nodes}
    qh = Reshape(q, shape)
    kh = Reshape(k, shape)
    vh = Reshape(v, shape)
    qt = Transpose<perm = [0, 2, 1, 3]>(qh)
    kt = Transpose<perm = [0, 2, 3, 1]>(kh)
    vt = Transpose<perm = [0, 2, 1, 3]>(vh)
    s = MatMul(qt, kt)
    scaled = Mul(s, scale)
    masked = Add(scaled, mask)
    p = Softmax<axis = -1>(masked)
    o = MatMul(p, vt)
    ot = Transpose<perm = [0, 2, 1, 3]>(o)
    y = Reshape(ot, merged)
}}
"""


def _model(rng: np.random.Generator, extra_outputs: str = "", extra_nodes: str = "", batch: object = "B",
           seq: int = 6, heads: int = 2, d: int = 8) -> onnx.ModelProto:
    embed = heads * d
    m = onnx.parser.parse_model(BLOCK.format(batch=batch, seq=seq, embed=embed, extra=extra_outputs,
                                             extra_nodes=extra_nodes))
    weights = {f"w{c}": (rng.standard_normal((embed, embed)) / np.sqrt(embed)).astype(np.float32) for c in "qkv"}
    weights.update({f"b{c}": rng.standard_normal(embed).astype(np.float32) for c in "qkv"})
    weights.update(shape=np.array([0, 0, heads, d], np.int64), merged=np.array([0, 0, embed], np.int64),
                   scale=np.array(d ** -0.5, np.float32))
    for name, w in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(w, name))
    return m


def _optimized(m: onnx.ModelProto, accepts=lambda node: None):
    graph, _ = run_pipeline(infer_graph_types(parse_onnx(m)), default_pipeline(3), debug=True)
    ctx = PassContext()
    graph = infer_graph_types(fuse_projected_attention(graph, ctx, accepts))
    verify(graph)
    return graph, ctx


def _inputs(rng: np.random.Generator, batch: int = 3, seq: int = 6, embed: int = 16) -> dict[str, np.ndarray]:
    mask = np.zeros((batch, 1, 1, seq), np.float32)
    mask[1:, ..., seq * 2 // 3:] = -10000.0
    return {"x": rng.standard_normal((batch, seq, embed)).astype(np.float32), "mask": mask}


def test_projection_and_attention_become_one_layer():
    rng = np.random.default_rng(0)
    m = _model(rng)
    graph, ctx = _optimized(m)
    ops = Counter(n.op_type for n in graph.nodes)
    assert ops["ProjectedAttention"] == 1, ops
    assert not {"FusedMatMul", "Split", "ScaledDotProductAttention"} & set(ops), ops
    fused = next(n for n in graph.nodes if n.op_type == "ProjectedAttention")
    assert fused.inputs[0].name == "x" and fused.inputs[3].name == "mask"
    assert fused.attrs == {"heads": 2, "scale": pytest.approx(8 ** -0.5)}
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    # W's rows and the bias grouped by head: head h's 8 query rows, 8 key rows, 8 value rows.
    for h in range(2):
        for c, which in enumerate("qkv"):
            rows = slice(h * 24 + c * 8, h * 24 + c * 8 + 8)
            np.testing.assert_array_equal(fused.inputs[1].const[rows], inits[f"w{which}"][:, h * 8:h * 8 + 8].T)
            np.testing.assert_array_equal(fused.inputs[2].const[rows], inits[f"b{which}"][h * 8:h * 8 + 8])
    assert not {"wq", "wk", "wv"} & {v.name for v in graph.initializers}
    assert ctx.rewrites.get("projected_attention") == 1
    assert fused.outputs[0].shape == ("B", 2, 6, 8)
    # The fused layer on the CPU (the op's reference) against onnxruntime on the original model.
    feeds = _inputs(rng)
    got = Runtime().load(Builder(BuilderConfig()).build(graph)).create_execution_context().execute(feeds)
    assert_close(got["y"], run_onnxruntime(m, feeds)["y"], "fp32", what="y")


def test_the_device_decides():
    graph, ctx = _optimized(_model(np.random.default_rng(1)), accepts=lambda node: "no fused kernel here")
    assert "ProjectedAttention" not in {n.op_type for n in graph.nodes}
    assert any(rule == "projected_attention" and "no fused kernel here" in why for rule, _, why in ctx.declines)


def test_a_projection_read_elsewhere_stays():
    m = _model(np.random.default_rng(2), extra_outputs=", float[B, 6, 16] k_out", extra_nodes="\n    k_out = Relu(k)")
    graph, ctx = _optimized(m)
    assert "ProjectedAttention" not in {n.op_type for n in graph.nodes}
    assert any("read by other layers" in why for _, _, why in ctx.declines), ctx.declines


def test_a_projection_with_an_activation_stays():
    m = _model(np.random.default_rng(3))
    for node in m.graph.node:  # q, k and v go through a Relu each (the merged product gets its epilogue)
        if node.op_type == "Add" and node.output[0] in ("q", "k", "v"):
            node.output[0] += "_pre"
    relus = [onnx.helper.make_node("Relu", [f"{c}_pre"], [c]) for c in "qkv"]
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes[:6] + relus + nodes[6:])
    graph, ctx = _optimized(m)
    assert "ProjectedAttention" not in {n.op_type for n in graph.nodes}
    assert any("epilogue beyond a bias" in why for _, _, why in ctx.declines), ctx.declines


def test_a_cpu_build_keeps_the_two_layers():
    plan = Builder(BuilderConfig()).build(parse_onnx(_model(np.random.default_rng(4))))
    ops = {n.op_type for n in plan.graph.nodes}
    assert "ScaledDotProductAttention" in ops and "ProjectedAttention" not in ops


def _node(x_shape, w_shape, heads: int, bias: bool = True, mask=None, dt: DType = DType.FLOAT32) -> Node:
    op = get_op("ProjectedAttention", "tensorkiln")
    inputs = [Value("x", TensorType(dt, x_shape)), Value("w", TensorType(dt, w_shape)),
              Value("b", TensorType(dt, (w_shape[0],))) if bias else None]
    if mask is not None:
        inputs.append(Value("mask", TensorType(dt, mask)))
    node = Node("ProjectedAttention", inputs, [Value("y")], op.normalize({"heads": heads, "scale": 0.5}, 1),
                name="pa", domain="tensorkiln", opset=1)
    return node


def test_op_checks_and_shapes():
    op = get_op("ProjectedAttention", "tensorkiln")
    node = _node(("B", "S", 16), (48, 16), 2)
    assert op.check(node) is None
    infer_node(node)
    assert node.outputs[0].shape == ("B", 2, "S", 8)
    assert "do not split into Q, K and V of 5 heads" in op.check(_node((2, 4, 16), (48, 16), 5))
    assert "rank 2" in op.check(_node((8, 16), (48, 16), 2))
    mixed = _node((2, 4, 16), (48, 16), 2)
    mixed.inputs[1] = Value("w", TensorType(DType.FLOAT16, (48, 16)))
    assert "share one dtype" in op.check(mixed)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("masked", [True, False])
def test_op_reference_is_the_projection_then_attention(bias, masked):
    """The reference on pack_heads's weight is the product with the original [E, 3*H*D] weight, its
    thirds split into heads, then attention."""
    gen = torch.Generator().manual_seed(5)
    batch, seq, heads, d = 2, 5, 3, 4
    x = torch.randn(batch, seq, heads * d, generator=gen, dtype=torch.float64)
    w = torch.randn(heads * d, 3 * heads * d, generator=gen, dtype=torch.float64)
    b = torch.randn(3 * heads * d, generator=gen, dtype=torch.float64) if bias else None
    mask = torch.where(torch.rand(batch, 1, 1, seq, generator=gen) > 0.3, 0.0, -1e4).double() if masked else None
    packed, packed_bias = pack_heads(w.numpy(), b.numpy() if bias else None, heads)
    got = get_op("ProjectedAttention", "tensorkiln").reference(
        None, [x, torch.from_numpy(packed), None if b is None else torch.from_numpy(packed_bias), mask],
        {"heads": heads, "scale": 0.5})
    qkv = x @ w + (b if bias else 0)
    q, k, v = (qkv[..., i * heads * d:(i + 1) * heads * d].reshape(batch, seq, heads, d).transpose(1, 2)
               for i in range(3))
    scores = q @ k.transpose(-1, -2) * 0.5 + (mask if masked else 0)
    torch.testing.assert_close(got, torch.softmax(scores, -1) @ v)


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [80, 2])
def test_a_cuda_fp16_build_fuses_where_the_tiles_fill_the_gpu(batch):
    """BERT's shape (128 tokens, heads of 64) in fp16 on the GPU: fused into the one-kernel layer where its
    (sequence, head) tiles fill the multiprocessors (80 x 2 here), left as two layers at batch 2; either
    way the engine matches onnxruntime at fp16's tolerance, and its CUDA graph gives what eager gives."""
    from tensorkiln.tactics.cuda.projected_attention import fused_kernel_reason

    rng = np.random.default_rng(6)
    m = _model(rng, batch=batch, seq=128, heads=2, d=64)
    plan = Builder(BuilderConfig(device="cuda", fp16=True)).build(parse_onnx(m))
    fused = [layer for layer in plan.layers if layer["op"] == "ProjectedAttention"]
    probe = next(n for n in _optimized(m)[0].nodes if n.op_type == "ProjectedAttention")
    probe.inputs = [None if v is None else Value(v.name, TensorType(DType.FLOAT16, v.shape), const=v.const)
                    for v in probe.inputs]
    kernel_takes = fused_kernel_reason(probe) is None
    fills = batch * 2 >= torch.cuda.get_device_properties(0).multi_processor_count
    assert len(fused) == (1 if kernel_takes and fills else 0), plan.layers
    if fused:
        assert fused[0]["tactic"] == "gluon_qkv_m128"
    declines = [d for p in plan.build_info["passes"] if p["name"] == "fuse_projected_attention"
                for d in p.get("declines", [])]
    if kernel_takes and not fills:
        assert any("multiprocessors" in str(d) for d in declines), declines
    feeds = _inputs(rng, batch, seq=128, embed=128)
    expected = run_onnxruntime(m, feeds)["y"]
    engine = Runtime("cuda").load(plan)
    on_gpu = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
    eager = engine.create_execution_context(cuda_graph=False).execute(on_gpu)["y"]
    graphed = engine.create_execution_context().execute(on_gpu)["y"]
    assert torch.equal(eager, graphed)
    assert_close(graphed.float().cpu().numpy(), expected, "fp16", what="y")
