"""fuse_embed_layer_norms: the LayerNorm of a sum of embedding lookups -> tensorkiln::EmbedLayerNormalization.

The op's reference is checked against numpy; the pass on models written in ONNX text (seeded
tables) by the layers left after the default pipeline and by the built engine against onnxruntime
at the precision's tolerance. A sum read elsewhere must stay available, and the near misses must
be left alone or declined with their reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from tensorkiln import Builder, BuilderConfig, Runtime
from tensorkiln.ir import DType, Node, TensorType, Value
from tensorkiln.ops import get_op
from test_skip_layer_norm import (affine, assert_engine_matches_onnxruntime, model, normal, ops, only,
                                  optimized as _optimized)
from tensorkiln.passes.pipeline import run_pipeline
from tensorkiln.tactics.autotune import random_feeds
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.testing.tolerances import assert_close

EMBED_LN = get_op("EmbedLayerNormalization", "tensorkiln")
VOCAB, TYPES, POSITIONS, H = 50, 2, 16, 32


def declined(m: onnx.ModelProto) -> list[tuple[str, str, str]]:
    _, reports = run_pipeline(parse_onnx(m), debug=True)
    return [d for r in reports if r.name == "fuse_embed_layer_norms" for d in r.declines]


def tables(seed: int = 10) -> dict[str, np.ndarray]:
    return {"word": normal(seed, VOCAB, H), "token_type": normal(seed + 1, TYPES, H, scale=0.5),
            "position": normal(seed + 2, POSITIONS, H, scale=0.5), **affine(H)}


def ids(seed: int, high: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape).astype(np.int64)


# ---- the op's reference ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("has_beta,has_dense", [(True, True), (False, False), (True, False)])
def test_reference_matches_numpy(dtype, has_beta, has_dense):
    t = tables()
    word_ids = ids(1, VOCAB, 2, 8)
    word_ids[0, 0] = -1  # counted from the end, as Gather's
    type_ids = ids(2, TYPES, 2, 8)
    dense = t["position"][:8]
    total = t["word"][word_ids].astype(np.float64) + t["token_type"][type_ids] + (dense if has_dense else 0)
    mean = total.mean(-1, keepdims=True)
    want = (total - mean) / np.sqrt(((total - mean) ** 2).mean(-1, keepdims=True) + 1e-12) * t["gamma"]
    want = want + (t["beta"] if has_beta else 0)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a).astype(dtype))  # noqa: E731
    inputs = [as_t(t["gamma"]), as_t(t["beta"]) if has_beta else None, as_t(dense) if has_dense else None,
              torch.from_numpy(word_ids), as_t(t["word"]), torch.from_numpy(type_ids.astype(np.int32)),
              as_t(t["token_type"])]
    attrs = EMBED_LN.normalize({"epsilon": 1e-12, "sum_output": 1}, 1)
    y, got_total = EMBED_LN.reference(None, inputs, attrs)
    assert y.dtype == got_total.dtype == inputs[0].dtype and tuple(y.shape) == (2, 8, H)
    precision = "fp32" if dtype == "float32" else "fp16"
    assert_close(y.float().numpy(), want, precision, what="y")
    assert_close(got_total.float().numpy(), total, precision, what="sum")


def _node(inputs: list, outputs: int = 1, attrs: dict | None = None) -> Node:
    values = [None if spec is None else Value(f"v{i}", TensorType(spec[1], spec[0])) for i, spec in enumerate(inputs)]
    return Node("EmbedLayerNormalization", values, [Value(f"o{k}") for k in range(outputs)],
                EMBED_LN.normalize(dict(attrs or {}), 1), name="embed", domain="tensorkiln", opset=1)


F32, I64 = DType.FLOAT32, DType.INT64


@pytest.mark.parametrize("inputs,outputs,reason", [
    ([((H,), F32), None, None, ((2, 8), I64)], 1, "at least one"),
    ([None, None, None, ((2, 8), I64), ((VOCAB, H), F32)], 1, "gamma is required"),
    ([((H,), F32), None, None, ((2, 8), DType.FLOAT32), ((VOCAB, H), F32)], 1, "not int32 or int64"),
    ([((H,), F32), None, None, ((2, 8), I64), ((VOCAB, H, 1), F32)], 1, "rank 3"),
    ([((H,), F32), None, None, ((2, 8), I64), ((VOCAB, H), DType.FLOAT16)], 1, "share one dtype"),
    ([((H,), F32), None, None, ((2, 8), I64), ((VOCAB, H), F32), ((8,), I64), ((TYPES, H), F32)], 1, "one shape"),
    ([((H,), F32), None, None, ((2, 8), I64), ((VOCAB, H), F32), ((2, 8), I64), ((TYPES, 4), F32)], 1, "row width"),
    ([((H,), DType.INT32), None, None, ((2, 8), I64), ((VOCAB, H), DType.INT32)], 1, "not supported"),
    ([((H,), F32), None, None, ((2, 8), I64), ((VOCAB, H), F32)], 3, "optional sum"),
])
def test_check_names_what_is_wrong(inputs, outputs, reason):
    assert reason in EMBED_LN.check(_node(inputs, outputs))


# ---- the pass on ONNX models ----------------------------------------------------------------

BERT_EMBEDDINGS = """
    position_ids = Constant <value = int64[8] {0, 1, 2, 3, 4, 5, 6, 7}> ()
    w = Gather (word, input_ids)
    t = Gather (token_type, token_type_ids)
    p = Gather (position, position_ids)
    wt = Add (w, t)
    s = Add (wt, p)
    y = LayerNormalization <epsilon = 1e-12> (s, gamma, beta)
"""


def bert_feeds(batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    return {"input_ids": ids(seed, VOCAB, batch, 8), "token_type_ids": ids(seed + 1, TYPES, batch, 8)}


def bert_embeddings() -> onnx.ModelProto:
    return model(BERT_EMBEDDINGS, "int64[B, 8] input_ids, int64[B, 8] token_type_ids", "float[B, 8, 32] y",
                 tables())


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_bert_embeddings_become_one_layer(precision):
    m = bert_embeddings()
    graph, _ = _optimized(m)
    fused = only(graph, "EmbedLayerNormalization")
    assert ops(graph) == ["EmbedLayerNormalization"]
    # The position lookup of a constant range folded to a constant: the dense term.
    assert fused.inputs[2] is not None and fused.inputs[2].const is not None
    assert [v.name for v in fused.inputs[3::2]] == ["input_ids", "token_type_ids"]
    assert len(fused.outputs) == 1 and fused.attrs["sum_output"] == 0
    config = {"fp16": True} if precision == "fp16" else {}
    graph = assert_engine_matches_onnxruntime(m, bert_feeds(), precision, **config)
    assert "EmbedLayerNormalization" in ops(graph)
    # The fused layer survives the engine file.
    plan = Builder(BuilderConfig(**config)).build(parse_onnx(m))
    first = Runtime("cpu").load(plan).create_execution_context().execute(bert_feeds(seed=5))
    again = Runtime("cpu").load(plan.serialize()).create_execution_context().execute(bert_feeds(seed=5))
    np.testing.assert_array_equal(again["y"], first["y"])


def test_a_sum_read_elsewhere_is_the_second_output():
    # GPT-2: the embeddings' sum is the first residual as well as the first LayerNorm's input.
    body = """
        w = Gather (word, input_ids)
        p = Gather (position, position_ids)
        h = Add (w, p)
        n = LayerNormalization <epsilon = 1e-5> (h, gamma, beta)
        two = Constant <value = float {2.0}> ()
        scaled = Mul (n, two)
        y = Add (scaled, h)
    """
    m = model(body, "int64[B, 8] input_ids, int64[B, 8] position_ids", "float[B, 8, 32] y", tables())
    graph, _ = _optimized(m)
    fused = only(graph, "EmbedLayerNormalization")
    assert len(fused.outputs) == 2 and fused.attrs["sum_output"] == 1
    assert fused.inputs[2] is None  # both terms are lookups: no dense term
    assert "Gather" not in ops(graph)
    feeds = {"input_ids": ids(3, VOCAB, 3, 8), "position_ids": ids(4, POSITIONS, 3, 8)}
    assert_engine_matches_onnxruntime(m, feeds)


def test_near_misses_are_left_alone_with_their_reason():
    # The word rows are an output too: their Gather stays, and with the position constant the sum
    # has two dense terms (the fused layer adds one).
    m = model(BERT_EMBEDDINGS + "    w_out = Identity (w)\n", "int64[B, 8] input_ids, int64[B, 8] token_type_ids",
              "float[B, 8, 32] y, float[B, 8, 32] w_out", tables())
    graph, _ = _optimized(m)
    assert "EmbedLayerNormalization" not in ops(graph)
    assert any("2 dense terms" in reason for _, _, reason in declined(m))
    assert_engine_matches_onnxruntime(m, bert_feeds())
    # One ids tensor broadcasts over the batch: that lookup is a dense term, and with the position
    # constant there are two.
    m = model(BERT_EMBEDDINGS, "int64[1, 8] input_ids, int64[B, 8] token_type_ids", "float[B, 8, 32] y", tables())
    assert any("2 dense terms" in reason for _, _, reason in declined(m))
    assert "EmbedLayerNormalization" not in ops(_optimized(m)[0])
    # A table that is an input, not a constant, is no embedding table: its rows are the dense term.
    weights = tables()
    del weights["word"]
    body = """
        w = Gather (words, input_ids)
        t = Gather (token_type, token_type_ids)
        s = Add (w, t)
        y = LayerNormalization <epsilon = 1e-12> (s, gamma, beta)
    """
    m = model(body, "int64[B, 8] input_ids, int64[B, 8] token_type_ids, float[50, 32] words", "float[B, 8, 32] y",
              weights)
    graph, _ = _optimized(m)
    fused = only(graph, "EmbedLayerNormalization")
    assert [v.name for v in fused.inputs[3::2]] == ["token_type_ids"] and fused.inputs[2].name == "w"
    feeds = {**bert_feeds(), "words": normal(5, VOCAB, H)}
    assert_engine_matches_onnxruntime(m, feeds)


def test_layer_norm_over_more_than_the_last_axis_is_not_taken():
    body = BERT_EMBEDDINGS.replace("<epsilon = 1e-12>", "<epsilon = 1e-12, axis = -2>")
    weights = {**tables(), "gamma": normal(7, 8, H, scale=0.2) + 1, "beta": normal(8, 8, H, scale=0.1)}
    m = model(body, "int64[B, 8] input_ids, int64[B, 8] token_type_ids", "float[B, 8, 32] y", weights)
    assert "EmbedLayerNormalization" not in ops(_optimized(m)[0])
    assert_engine_matches_onnxruntime(m, bert_feeds())


def test_tuning_inputs_index_inside_every_table():
    # The tuner makes up ids below the size of every table they index, inside the fused layer too.
    graph, _ = _optimized(bert_embeddings())
    feeds = random_feeds(graph, {"input_ids": (4, 8), "token_type_ids": (4, 8)}, torch.device("cpu"), seed=0)
    by_name = dict(zip([v.name for v in graph.inputs], feeds))
    assert 0 <= int(by_name["token_type_ids"].min()) and int(by_name["token_type_ids"].max()) < TYPES
