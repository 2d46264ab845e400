"""fuse_skip_layer_norms: LayerNormalization(Add(x, skip)) -> tensorkiln::SkipLayerNormalization.

The op's reference is checked against numpy; the rule on models written in ONNX text (seeded
weights) by the layers left after the default pipeline and by the built engine against
onnxruntime at the fp32 tolerance. The residual Add must be the one taken (the bias stays in the
GEMM epilogue), readers of the sum must keep working, and the near misses must be declined with
their reason.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import onnx
import onnx.parser
import pytest
import torch
from onnx import numpy_helper

from tensorkiln import Builder, BuilderConfig, Runtime
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import DType, Graph, Node, TensorType, Value, verify
from tensorkiln.ops import get_op
from tensorkiln.passes.pipeline import run_pipeline
from tensorkiln.testing import zoo
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

SKIP_LN = get_op("SkipLayerNormalization", "tensorkiln")


# ---- helpers --------------------------------------------------------------------------------

def model(body: str, inputs: str, outputs: str, weights: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    m = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
    g ({inputs}) => ({outputs}) {{
        {body}
    }}""")
    for name, array in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    onnx.checker.check_model(m)
    return m


def normal(seed: int, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def affine(d: int, seed: int = 100) -> dict[str, np.ndarray]:
    return {"gamma": normal(seed, d, scale=0.2) + 1, "beta": normal(seed + 1, d, scale=0.1)}


def optimized(m: onnx.ModelProto) -> tuple[Graph, list[tuple[str, str, str]]]:
    """The graph after the default pipeline, and what fuse_skip_layer_norms declined."""
    graph, reports = run_pipeline(parse_onnx(m), debug=True)
    verify(graph, check_node=lambda n: get_op(n.op_type, n.domain).check(n))
    declined = [d for r in reports if r.name == "fuse_skip_layer_norms" for d in r.declines]
    return graph, declined


def ops(graph: Graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


def producer(graph: Graph, v: Value) -> Optional[Node]:
    return next((n for n in graph.nodes if any(o.name == v.name for o in n.outputs)), None)


def only(graph: Graph, op_type: str) -> Node:
    nodes = [n for n in graph.nodes if n.op_type == op_type]
    assert len(nodes) == 1, ops(graph)
    return nodes[0]


def assert_engine_matches_onnxruntime(m: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                                      precision: str = "fp32", **config) -> Graph:
    plan = Builder(BuilderConfig(**config)).build(parse_onnx(m))
    got = Runtime("cpu").load(plan).create_execution_context().execute(dict(feeds))
    want = run_onnxruntime(m, feeds)
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        assert_close(np.asarray(got[name], dtype=np.float32), expected, precision, what=name)
    return plan.graph


# ---- the op's reference ---------------------------------------------------------------------

def numpy_skip_layer_norm(x, skip, gamma, beta, axis, eps):
    total = x.astype(np.float64) + skip.astype(np.float64)
    dims = tuple(range(axis, x.ndim))
    mean = total.mean(axis=dims, keepdims=True)
    var = ((total - mean) ** 2).mean(axis=dims, keepdims=True)
    y = (total - mean) / np.sqrt(var + eps) * gamma
    return y + (0 if beta is None else beta), total


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("has_beta", [True, False])
@pytest.mark.parametrize("shapes,axis", [
    (((2, 5, 24), (2, 5, 24)), -1),
    (((2, 5, 24), (5, 24)), -1),      # skip [S, D] over [B, S, D]
    (((3, 4, 6), (1, 4, 6)), -2),     # normalized over [S, D]
    (((7, 10), (7, 10)), 1),
])
def test_reference_matches_numpy(dtype, has_beta, shapes, axis):
    x_shape, skip_shape = shapes
    x, skip = normal(1, *x_shape, scale=2.0) + 0.5, normal(2, *skip_shape)
    normalized = x_shape[axis:]
    gamma, beta = normal(3, *normalized, scale=0.2) + 1, normal(4, *normalized, scale=0.1)
    as_t = lambda a: torch.from_numpy(a.astype(dtype))  # noqa: E731
    inputs = [as_t(x), as_t(skip), as_t(gamma)] + ([as_t(beta)] if has_beta else [])
    attrs = SKIP_LN.normalize({"axis": axis, "epsilon": 1e-6}, 1)
    y, total = SKIP_LN.reference(None, inputs, attrs)
    # The oracle sees the inputs as rounded to the test dtype; fp16 results are rounded once.
    want_y, want_total = numpy_skip_layer_norm(x.astype(dtype), skip.astype(dtype), gamma.astype(dtype),
                                               beta.astype(dtype) if has_beta else None,
                                               axis % len(x_shape), 1e-6)
    precision = "fp32" if dtype == "float32" else "fp16"
    assert y.dtype == total.dtype == inputs[0].dtype and tuple(y.shape) == x_shape
    assert_close(y.float().numpy(), want_y, precision, "y")
    assert_close(total.float().numpy(), want_total, precision, "sum")


def test_check_records_or_verifies_the_sum_output():
    def node(outputs: int, sum_output) -> Node:
        values = [Value(n, TensorType(DType.FLOAT32, s)) for n, s in (("x", (2, 8)), ("r", (2, 8)), ("g", (8,)))]
        return Node("SkipLayerNormalization", values, [Value(f"o{i}") for i in range(outputs)],
                    SKIP_LN.normalize({"sum_output": sum_output}, 1), domain="tensorkiln", opset=1)
    one, two = node(1, None), node(2, None)
    assert SKIP_LN.check(one) is None and one.attrs["sum_output"] == 0
    assert SKIP_LN.check(two) is None and two.attrs["sum_output"] == 1
    assert "sum_output=1" in SKIP_LN.check(node(1, 1))


def test_reference_gives_the_outputs_the_layer_has():
    # The autotuner drops a candidate whose outputs differ from the reference's: a layer
    # without the sum output must get one tensor from the reference, as from the kernels.
    x, skip, gamma = (torch.randn(2, 8) for _ in range(3))
    gamma = gamma[0]
    without = SKIP_LN.reference(None, [x, skip, gamma], SKIP_LN.normalize({"sum_output": 0}, 1))
    with_sum = SKIP_LN.reference(None, [x, skip, gamma], SKIP_LN.normalize({"sum_output": 1}, 1))
    assert len(without) == 1 and len(with_sum) == 2
    torch.testing.assert_close(without[0], with_sum[0])
    torch.testing.assert_close(with_sum[1], x + skip)


# ---- the rule -------------------------------------------------------------------------------

def test_add_then_layer_norm_becomes_one_layer():
    m = model("s = Add(x, r)\n y = LayerNormalization<epsilon = 1e-6>(s, gamma, beta)",
              "float[2, 5, 32] x, float[2, 5, 32] r", "float[2, 5, 32] y", affine(32))
    graph, declined = optimized(m)
    assert ops(graph) == ["SkipLayerNormalization"] and not declined
    fused = graph.nodes[0]
    assert [v.name for v in fused.inputs] == ["x", "r", "gamma", "beta"]
    assert [v.name for v in fused.outputs] == ["y"]
    assert fused.attrs["sum_output"] == 0 and fused.attrs["epsilon"] == pytest.approx(1e-6)
    feeds = {"x": normal(1, 2, 5, 32), "r": normal(2, 2, 5, 32)}
    assert ops(assert_engine_matches_onnxruntime(m, feeds)) == ["SkipLayerNormalization"]


def test_broadcast_skip_over_the_batch():
    # Add(pos [S, D], x [B, S, D]): the full-shaped operand becomes x whatever the Add's order.
    m = model("s = Add(pos, x)\n y = LayerNormalization(s, gamma, beta)",
              "float[B, 6, 16] x", "float[B, 6, 16] y", {"pos": normal(3, 6, 16), **affine(16)})
    graph, _ = optimized(m)
    fused = only(graph, "SkipLayerNormalization")
    assert [v.name for v in fused.inputs[:2]] == ["x", "pos"]
    for batch in (1, 3):
        assert_engine_matches_onnxruntime(m, {"x": normal(batch, batch, 6, 16)})


def test_other_readers_of_the_sum_read_the_second_output():
    # The sum is read by a Relu listed before the LayerNorm, and is a graph output itself.
    m = model("s = Add(x, r)\n z = Relu(s)\n y = LayerNormalization(s, gamma)\n out = Mul(y, z)",
              "float[4, 24] x, float[4, 24] r", "float[4, 24] out, float[4, 24] s", {"gamma": affine(24)["gamma"]})
    graph, _ = optimized(m)
    fused = only(graph, "SkipLayerNormalization")
    assert "Add" not in ops(graph)
    assert [v.name for v in fused.outputs][1] == "s" and fused.attrs["sum_output"] == 1
    assert len(fused.inputs) == 3  # no beta
    feeds = {"x": normal(1, 4, 24), "r": normal(2, 4, 24)}
    assert_engine_matches_onnxruntime(m, feeds)


TRANSFORMER_BLOCK = """
    mm = MatMul(h, w)
    biased = Add(bias, mm)
    s = Add(biased, res)
    y = LayerNormalization<epsilon = 1e-12>(s, gamma, beta)
"""


def test_takes_the_residual_add_and_leaves_the_bias_to_the_gemm():
    # MatMul -> Add(bias) -> Add(residual) -> LayerNorm, as BERT's exporter writes it.
    weights = {"w": normal(5, 48, 32, scale=0.15), "bias": normal(6, 32, scale=0.1), **affine(32)}
    m = model(TRANSFORMER_BLOCK, "float[B, 7, 48] h, float[B, 7, 32] res", "float[B, 7, 32] y", weights)
    graph, _ = optimized(m)
    assert sorted(ops(graph)) == ["FusedMatMul", "SkipLayerNormalization"]
    fused, gemm = only(graph, "SkipLayerNormalization"), only(graph, "FusedMatMul")
    assert producer(graph, fused.inputs[0]) is gemm and fused.inputs[1].name == "res"
    assert [v.name for v in gemm.inputs] == ["h", "w", "bias"]  # the bias, and no residual input
    feeds = {"h": normal(1, 2, 7, 48), "res": normal(2, 2, 7, 32)}
    assert_engine_matches_onnxruntime(m, feeds)


def test_fp16_engine_keeps_the_fused_layer_in_fp16():
    weights = {"w": normal(5, 48, 32, scale=0.15), "bias": normal(6, 32, scale=0.1), **affine(32)}
    m = model(TRANSFORMER_BLOCK, "float[2, 7, 48] h, float[2, 7, 32] res", "float[2, 7, 32] y", weights)
    feeds = {"h": normal(1, 2, 7, 48), "res": normal(2, 2, 7, 32)}
    graph = assert_engine_matches_onnxruntime(m, feeds, "fp16", fp16=True)
    fused = only(graph, "SkipLayerNormalization")
    # It accumulates in fp32 inside, so it takes and gives fp16 tensors (no fp32 island).
    assert fused.meta["precision"] == "fp16" and fused.inputs[0].dtype == DType.FLOAT16


ADD_LN = "s = Add(x, r)\n y = LayerNormalization(s, gamma, beta)"


@pytest.mark.parametrize("body,inputs,weights,reason", [
    # No residual: Add(MatMul, bias) is the GEMM's bias.
    ("mm = MatMul(x, w)\n s = Add(mm, bias)\n y = LayerNormalization(s, gamma, beta)", {"x": (2, 7, 48)},
     {"w": normal(5, 48, 32), "bias": normal(6, 32), **affine(32)}, "epilogue takes it"),
    # The addend varies along a dim x has whole: the kernel's rows cannot index it.
    (ADD_LN, {"x": (2, 7, 32), "r": (2, 1, 32)}, affine(32), "broadcasts inside a row"),
    # Neither operand has the sum's shape.
    (ADD_LN, {"x": (2, 1, 32), "r": (1, 7, 32)}, affine(32), "the sum's shape"),
    # Rows wider than one block of the fused kernel (normalized over [90, 100]).
    (ADD_LN.replace("LayerNormalization(", "LayerNormalization<axis = 1>("), {"x": (2, 90, 100), "r": (2, 90, 100)},
     {"gamma": np.ones((90, 100), np.float32), "beta": np.zeros((90, 100), np.float32)},
     "exceed the fused kernel's 8192"),
])
def test_declines_with_a_reason(body, inputs, weights, reason):
    out = tuple(max(dims) for dims in zip(*inputs.values()))
    m = model(body, ", ".join(f"float{list(s)} {n}" for n, s in inputs.items()), f"float{list(out)} y", weights)
    graph, declined = optimized(m)
    assert "SkipLayerNormalization" not in ops(graph) and "LayerNormalization" in ops(graph)
    assert len(declined) == 1 and reason in declined[0][2], declined
    feeds = {name: normal(i, *shape) for i, (name, shape) in enumerate(inputs.items())}
    assert_engine_matches_onnxruntime(m, feeds)


def test_bert_encoder_fuses_every_residual_add():
    layers = zoo.SMALL["bert_encoder"]["layers"]
    graph, _ = optimized(zoo.build("bert_encoder", small=True))
    fused = [n for n in graph.nodes if n.op_type == "SkipLayerNormalization"]
    # Two per layer (after attention and after the feed-forward block); the embeddings' LayerNorm
    # sums positions of a shape only known as another symbol, so it stays a LayerNormalization.
    assert len(fused) == 2 * layers
    assert ops(graph).count("LayerNormalization") + len(fused) == 2 * layers + 1
    for node in fused:
        gemm = producer(graph, node.inputs[0])
        assert gemm.op_type == "FusedMatMul" and len(gemm.inputs) == 3, gemm  # bias, no residual
        assert gemm.inputs[2].const is not None
