"""TfIdfVectorizer against onnxruntime and the ONNX reference evaluator, plus refusals.

The reference evaluator fails on IDF/TFIDF without weights (it takes len(None)) and indexes
weights by output column rather than by pool n-gram (the schema and onnxruntime), which only
shows when ngram_indexes is not 0, 1, 2, ...; onnxruntime refuses pools with a repeated
n-gram. Each case uses the oracles that run it and agree on it."""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx.parser
import pytest

from tensorkiln.errors import UnsupportedOpError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.testing.check import check_model

# 1-grams 2, 3, 5, 4; 2-grams (5,6) (7,8) (6,7); 3-grams (2,3,5) (5,6,7).
_POOL = [2, 3, 5, 4, 5, 6, 7, 8, 6, 7, 2, 3, 5, 5, 6, 7]
_COUNTS = [0, 4, 10]
_INDEXES = list(range(9))
# Columns shuffled, and (7,8) shares column 5 with (2,3,5).
_SHUFFLED = [3, 1, 2, 0, 4, 5, 6, 5, 7]
_LAYOUTS = {"identity": (_INDEXES, 9), "shuffled": (_SHUFFLED, 8)}
_WEIGHTS = [0.5, 1.25, 2.0, 0.75, 3.0, 1.5, 0.1, 4.0, 0.3]


def _ints(values: list) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _model(dtype: str, shape: str, out_shape: str, min_n: int, max_n: int, skips: int, mode: str,
           weights: Optional[list[float]] = None, pool: list[int] = _POOL, counts: list[int] = _COUNTS,
           indexes: list[int] = _INDEXES) -> str:
    attrs = [f"min_gram_length: int = {min_n}", f"max_gram_length: int = {max_n}",
             f"max_skip_count: int = {skips}", f'mode: string = "{mode}"',
             f"pool_int64s: ints = {_ints(pool)}", f"ngram_counts: ints = {_ints(counts)}",
             f"ngram_indexes: ints = {_ints(indexes)}"]
    if weights is not None:
        attrs.append(f"weights: floats = {_ints(weights)}")
    return f"""
        <ir_version: 10, opset_import: ["" : 9]>
        g ({dtype}{shape} x) => (float{out_shape} y) {{
            y = TfIdfVectorizer <{", ".join(attrs)}> (x)
        }}
    """


def _tokens(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    # Mostly pool items so that n-grams hit, with some outsiders (0, 1, 9, negatives).
    return rng.choice(np.array([-3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5, 6, 7]), size=shape).astype(dtype)


def _oracles(mode: str, weighted: bool, layout: str) -> list[str]:
    ref_runs = mode == "TF" or (weighted and layout == "identity")
    return ["ort", "ref"] if ref_runs else ["ort"]


@pytest.mark.parametrize("layout", ["identity", "shuffled"])
@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("mode,weighted", [("TF", False), ("IDF", False), ("IDF", True),
                                           ("TFIDF", False), ("TFIDF", True)])
@pytest.mark.parametrize("min_n,max_n,skips", [(1, 1, 0), (1, 3, 0), (2, 2, 3), (1, 3, 2), (2, 3, 5), (3, 3, 1)])
def test_tfidf_batch(backend, rng, layout, dtype, mode, weighted, min_n, max_n, skips):
    indexes, size = _LAYOUTS[layout]
    x = _tokens(rng, (3, 12), dtype)
    text = _model(dtype, "[3,12]", f"[3,{size}]", min_n, max_n, skips, mode, _WEIGHTS if weighted else None,
                  indexes=indexes)
    for oracle in _oracles(mode, weighted, layout):
        check_model(text, {"x": x}, device=backend, oracle=oracle)


@pytest.mark.parametrize("layout", ["identity", "shuffled"])
@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("min_n,max_n,skips", [(1, 2, 0), (1, 3, 4), (2, 3, 1)])
def test_tfidf_1d(backend, rng, layout, dtype, min_n, max_n, skips):
    indexes, size = _LAYOUTS[layout]
    x = _tokens(rng, (15,), dtype)
    text = _model(dtype, "[15]", f"[{size}]", min_n, max_n, skips, "TFIDF", _WEIGHTS, indexes=indexes)
    for oracle in _oracles("TFIDF", True, layout):
        check_model(text, {"x": x}, device=backend, oracle=oracle)


def test_tfidf_weights_follow_pool_ngrams_not_columns(backend):
    # Column 5 holds (7,8) (weight 1.5) and (2,3,5) (weight 4.0): TFIDF adds both,
    # IDF takes the later pool n-gram's weight; column 3 holds unigram 2 (weight 0.5).
    indexes, size = _LAYOUTS["shuffled"]
    x = np.array([7, 8, 7, 8, 2, 3, 5, 2, 3, 5, 2, 3, 5], dtype=np.int64)
    for mode, col3, col5 in [("TFIDF", 3 * 0.5, 2 * 1.5 + 3 * 4.0), ("IDF", 0.5, 4.0)]:
        text = _model("int64", "[13]", f"[{size}]", 1, 3, 0, mode, _WEIGHTS, indexes=indexes)
        got = check_model(text, {"x": x}, device=backend, oracle="ort")["y"]
        assert got[3] == np.float32(col3) and got[5] == np.float32(col5)


def test_tfidf_repeated_pool_ngram_takes_the_later_column(backend, rng):
    pool, counts, indexes = [5, 6, 7, 8, 5, 6], [0, 0], [0, 1, 2]
    x = _tokens(rng, (2, 10), "int64")
    text = _model("int64", "[2,10]", "[2,3]", 2, 2, 1, "TF", pool=pool, counts=counts, indexes=indexes)
    got = check_model(text, {"x": x}, device=backend, oracle="ref")
    assert not got["y"][:, 0].any() and got["y"][:, 2].any()


def test_tfidf_input_shorter_than_ngrams(backend):
    x = np.array([[5, 6], [2, 2]], dtype=np.int64)
    text = _model("int64", "[2,2]", "[2,9]", 3, 3, 2, "TF")
    got = check_model(text, {"x": x}, device=backend, oracle="ref")
    assert not got["y"].any()


def test_tfidf_empty_length_level(backend):
    # No 1-grams in the pool (two equal starts), bigrams only; columns not in order.
    pool, counts, indexes = [5, 6, 7, 8, 6, 7], [0, 0], [2, 0, 1]
    x = np.array([5, 6, 7, 8, 6, 7, 5, 6, 9, 6, 7], dtype=np.int32)
    text = _model("int32", "[11]", "[3]", 2, 2, 1, "TF", pool=pool, counts=counts, indexes=indexes)
    check_model(text, {"x": x}, device=backend, oracle="ref")


def test_tfidf_large_values_compare_item_by_item(backend, rng):
    # 80 distinct values and 10-grams overflow the packed window keys (81**10 > 2**62), so
    # the item-by-item comparison path runs; values far outside int32 are kept exact.
    vocab = [int(v) for v in rng.choice(2**62, size=80, replace=False) - 2**61]
    tens = [vocab[0:10], vocab[5:15], vocab[40:50]]
    pool = vocab + [v for gram in tens for v in gram]
    counts, indexes = [0] + [80] * 9, list(range(83))
    seq = np.array([vocab[0:10] + vocab[5:15], vocab[40:50] + vocab[60:70]], dtype=np.int64)
    text = _model("int64", "[2,20]", "[2,83]", 1, 10, 1, "TF", pool=pool, counts=counts, indexes=indexes)
    got = check_model(text, {"x": seq}, device=backend, oracle="ref")
    assert got["y"][:, 80:].sum() == 3


def test_tfidf_weights_length_is_checked():
    text = _model("int64", "[4]", "[9]", 1, 1, 0, "TFIDF", _WEIGHTS[:5])
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(onnx.parser.parse_model(text))
    assert "weights has 5 entries" in str(err.value)


def test_tfidf_string_pool_is_refused():
    text = """
        <ir_version: 10, opset_import: ["" : 9]>
        g (string[4] x) => (float[2] y) {
            y = TfIdfVectorizer <min_gram_length: int = 1, max_gram_length: int = 1, max_skip_count: int = 0,
                                 mode: string = "TF", pool_strings: strings = ["a", "b"],
                                 ngram_counts: ints = [0], ngram_indexes: ints = [0, 1]> (x)
        }
    """
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(onnx.parser.parse_model(text))
    assert "TfIdfVectorizer" in str(err.value) or "string tensors are not supported" in str(err.value)
    assert "string tensors are not supported by the tensor runtime" in str(err.value)


def test_tfidf_unknown_mode_is_refused():
    text = _model("int64", "[4]", "[9]", 1, 1, 0, "BM25")
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(onnx.parser.parse_model(text))
    assert "BM25" in str(err.value)
