"""narrow_attention_masks: Where(And(pad, all-true), 0, -inf) feeding attention -> Where(pad, 0, -inf).

Models are written in ONNX text: attention as the primitive chain (recognize_attention makes it
one layer), the padding mask widened the way transformers 5 exports BERT's. The narrowed mask's
shape is checked on the optimized graph, the engine's outputs against onnxruntime at the fp32
tolerance (a fully padded row included), and the near misses are left as they are.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

from tensorkiln import Builder, BuilderConfig, Runtime
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.ir import verify
from tensorkiln.ops import get_op
from tensorkiln.passes.pipeline import run_pipeline
from tensorkiln.testing.oracles import run_onnxruntime
from tensorkiln.testing.tolerances import assert_close

S, D = 6, 8


def masked_attention(query_side: np.ndarray, scale_name: str = "scale") -> onnx.ModelProto:
    """q, k, v [1, 2, S, D] and a bool padding row pad [1, 1, 1, S]; the mask is
    Where(And(query_side, pad), 0, -inf), query_side a [1, 1, S, 1] bool constant."""
    m = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 2, {S}, {D}] q, float[1, 2, {S}, {D}] k, float[1, 2, {S}, {D}] v, bool[1, 1, 1, {S}] pad)
      => (float[1, 2, {S}, {D}] y) {{
        both = And(query_side, pad)
        mask = Where(both, zero, minus_inf)
        kt = Transpose<perm = [0, 1, 3, 2]>(k)
        raw = MatMul(q, kt)
        scores = Mul(raw, {scale_name})
        masked = Add(scores, mask)
        weights = Softmax<axis = -1>(masked)
        y = MatMul(weights, v)
    }}""")
    for name, array in {"query_side": query_side, "zero": np.array(0.0, np.float32),
                        "minus_inf": np.array(-np.inf, np.float32),
                        "scale": np.array(1 / np.sqrt(D), np.float32)}.items():
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    onnx.checker.check_model(m)
    return m


def feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pad = np.ones((1, 1, 1, S), bool)
    pad[..., S - 2:] = False
    return {"q": rng.standard_normal((1, 2, S, D)).astype(np.float32),
            "k": rng.standard_normal((1, 2, S, D)).astype(np.float32),
            "v": rng.standard_normal((1, 2, S, D)).astype(np.float32), "pad": pad}


def attention_mask_shape(m: onnx.ModelProto) -> tuple:
    graph, _ = run_pipeline(parse_onnx(m))
    verify(graph, check_node=lambda n: get_op(n.op_type, n.domain).check(n))
    attention = [n for n in graph.nodes if n.op_type == "ScaledDotProductAttention"]
    assert len(attention) == 1, [n.op_type for n in graph.nodes]
    return tuple(attention[0].inputs[3].shape)


def engine_matches_onnxruntime(m: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> None:
    plan = Builder(BuilderConfig()).build(parse_onnx(m))
    got = Runtime("cpu").load(plan).create_execution_context().execute(dict(inputs))
    want = run_onnxruntime(m, inputs)
    assert_close(np.asarray(got["y"]), want["y"], "fp32", what="y")


def test_all_true_query_side_is_dropped_from_the_mask():
    m = masked_attention(np.ones((1, 1, S, 1), bool))
    assert attention_mask_shape(m) == (1, 1, 1, S)
    engine_matches_onnxruntime(m, feeds())


def test_engine_output_with_one_key_left_unpadded_matches():
    m = masked_attention(np.ones((1, 1, S, 1), bool))
    inputs = feeds(1)
    inputs["pad"][...] = False
    inputs["pad"][..., 0] = True
    engine_matches_onnxruntime(m, inputs)


@pytest.mark.parametrize("why", ["a query row masked", "the constant is not boolean all-true"])
def test_masks_that_differ_per_query_stay_wide(why):
    query_side = np.ones((1, 1, S, 1), bool)
    if why == "a query row masked":
        query_side[0, 0, 2, 0] = False
        m = masked_attention(query_side)
    else:
        m = masked_attention(query_side)
        # The And's constant operand replaced by an input: nothing known at build time.
        m.graph.initializer.pop(0)
        m.graph.input.append(onnx.helper.make_tensor_value_info("query_side", onnx.TensorProto.BOOL, [1, 1, S, 1]))
    assert attention_mask_shape(m) == (1, 1, S, S)
    inputs = feeds(2)
    if why == "a query row masked":
        # A query row masked for every key: NaN in the chain onnxruntime runs, zeros in the fused
        # attention layer (ops/sdpa.py); every other row must match.
        plan = Builder(BuilderConfig()).build(parse_onnx(m))
        got = np.asarray(Runtime("cpu").load(plan).create_execution_context().execute(dict(inputs))["y"])
        want = run_onnxruntime(m, inputs)["y"]
        assert np.all(np.isnan(want[:, :, 2])) and np.all(got[:, :, 2] == 0)
        keep = [i for i in range(S) if i != 2]
        assert_close(got[:, :, keep], want[:, :, keep], "fp32", what="y")
    else:
        inputs["query_side"] = query_side
        engine_matches_onnxruntime(m, inputs)
