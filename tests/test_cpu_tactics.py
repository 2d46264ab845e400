"""CPU tactics beyond the reference: "linear_nt" (fp16/bf16 products with the constant weight
kept [N, K], torch's fast CPU layout)."""

from __future__ import annotations

import numpy as np
import onnx.parser
import pytest
import torch
from onnx import numpy_helper

from tensorkiln.builder import Builder, BuilderConfig
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import DType, Node, TensorType, Value
from tensorkiln.ops import get_op
from tensorkiln.runtime import Runtime
from tensorkiln.tactics.registry import find_tactic
from tensorkiln.tactics.select import select_tactic
from tensorkiln.testing.tolerances import assert_close

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _node(op_type: str, dtype: DType, weight: np.ndarray, attrs: dict, domain: str = "", extra: int = 0) -> Node:
    a = Value("a", TensorType(dtype, (2, 5, weight.shape[0])))
    w = Value("w", const=weight)
    inputs = [a, w] + [Value(f"e{i}", TensorType(dtype, (weight.shape[1],))) for i in range(extra)]
    return Node(op_type, inputs, [Value("y", TensorType(dtype, None))], attrs, domain=domain)


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
@pytest.mark.parametrize("op_type, domain, attrs, extra", [
    ("MatMul", "", {}, 0),
    ("FusedMatMul", "tensorkiln", {"activation": "Relu"}, 1),
    ("FusedMatMul", "tensorkiln", {"activation": "Gelu", "alpha": 0.5}, 1),
])
def test_linear_nt_matches_the_reference(precision, op_type, domain, attrs, extra):
    dtype = PRECISIONS[precision]
    gen = torch.Generator().manual_seed(0)
    weight = (torch.rand(24, 40, generator=gen) - 0.5).to(dtype)
    node = _node(op_type, DType.from_torch(dtype), weight.float().numpy(), attrs, domain, extra)
    tactic = find_tactic("cpu", op_type, domain, "linear_nt")
    assert tactic is not None and tactic.supports(node) is None
    inputs = [(torch.rand(2, 5, 24, generator=gen) - 0.5).to(dtype), weight]
    inputs += [(torch.rand(40, generator=gen) - 0.5).to(dtype) for _ in range(extra)]
    reference = get_op(op_type, domain).reference(None, inputs, attrs)
    for _ in range(2):
        got = tactic.run(None, inputs, attrs)
        assert got.dtype == dtype and got.shape == reference.shape
        assert_close(got.float().numpy(), reference.float().numpy(), precision, f"{op_type} {attrs}")
    assert len(tactic.run.__self__.weights) == 1  # the [N, K] copy is made once per weight


@pytest.mark.parametrize("dtype, const, attrs, reason", [
    (DType.FLOAT32, True, {}, "not an fp16/bf16 product"),
    (DType.FLOAT16, False, {}, "the weight is not a constant"),
    (DType.FLOAT16, True, {"transB": 1}, "already stored [N, K]"),
])
def test_linear_nt_says_why_it_does_not_apply(dtype, const, attrs, reason):
    w = Value("w", const=np.zeros((4, 3), np.float32)) if const else Value("w", TensorType(dtype, (4, 3)))
    node = Node("FusedMatMul", [Value("a", TensorType(dtype, (2, 4))), w], [Value("y")], attrs, domain="tensorkiln")
    assert reason in find_tactic("cpu", "FusedMatMul", "tensorkiln", "linear_nt").supports(node)


def test_fp16_cpu_engine_offers_linear_nt_and_matches_onnxruntime_tolerance():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    mlp (float[4,64] x) => (float[4,32] y) {
        h = MatMul(x, w1)
        hb = Add(h, b1)
        a = Relu(hb)
        y = MatMul(a, w2)
    }""")
    rng = np.random.default_rng(0)
    w1, b1, w2 = (rng.uniform(-0.3, 0.3, s).astype(np.float32) for s in ((64, 48), (48,), (48, 32)))
    model.graph.initializer.extend([numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
                                    numpy_helper.from_array(w2, "w2")])
    plan = Builder(BuilderConfig(fp16=True)).build(parse_onnx(model))
    products = [n for n in plan.graph.nodes if n.op_type in ("MatMul", "FusedMatMul")]
    assert len(products) == 2
    for node in products:
        assert "linear_nt" in select_tactic(node, "cpu").applicable
    x = rng.uniform(-1, 1, (4, 64)).astype(np.float32)
    y = Runtime("cpu").load(plan).create_execution_context().execute({"x": x})["y"]
    assert_close(y, np.maximum(x @ w1 + b1, 0) @ w2, "fp16", "y")
