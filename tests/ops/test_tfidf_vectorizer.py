"""TfIdfVectorizer against onnxruntime and the ONNX reference evaluator, plus refusals.

The reference evaluator fails on IDF/TFIDF without weights (it takes len(None)), and
onnxruntime refuses pools with a repeated n-gram, so each case uses the oracles that run it."""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx.parser
import pytest

from tensorkiln.errors import UnsupportedOpError
from tensorkiln.frontends.onnx import parse_onnx
from tensorkiln.testing.check import check_model

# 1-grams 2, 3, 5, 4; 2-grams (5,6) (7,8) (6,7); 3-grams (2,3,5) (5,6,7).
# Columns are shuffled and (7,8) shares column 5 with (2,3,5).
_POOL = [2, 3, 5, 4, 5, 6, 7, 8, 6, 7, 2, 3, 5, 5, 6, 7]
_COUNTS = [0, 4, 10]
_INDEXES = [3, 1, 2, 0, 4, 5, 6, 5, 7]
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


@pytest.mark.parametrize("oracle", ["ort", "ref"])
@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("mode,weighted", [("TF", False), ("IDF", False), ("IDF", True),
                                           ("TFIDF", False), ("TFIDF", True)])
@pytest.mark.parametrize("min_n,max_n,skips", [(1, 1, 0), (1, 3, 0), (2, 2, 3), (1, 3, 2), (2, 3, 5), (3, 3, 1)])
def test_tfidf_batch(backend, rng, oracle, dtype, mode, weighted, min_n, max_n, skips):
    if oracle == "ref" and mode != "TF" and not weighted:
        pytest.skip("the ONNX reference evaluator fails on IDF/TFIDF without weights")
    x = _tokens(rng, (3, 12), dtype)
    text = _model(dtype, "[3,12]", "[3,8]", min_n, max_n, skips, mode, _WEIGHTS if weighted else None)
    check_model(text, {"x": x}, device=backend, oracle=oracle)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("min_n,max_n,skips", [(1, 2, 0), (1, 3, 4), (2, 3, 1)])
def test_tfidf_1d(backend, rng, dtype, min_n, max_n, skips):
    x = _tokens(rng, (15,), dtype)
    text = _model(dtype, "[15]", "[8]", min_n, max_n, skips, "TFIDF", _WEIGHTS)
    check_model(text, {"x": x}, device=backend, oracle="ort")
    check_model(text, {"x": x}, device=backend, oracle="ref")


def test_tfidf_repeated_pool_ngram_takes_the_later_column(backend, rng):
    pool, counts, indexes = [5, 6, 7, 8, 5, 6], [0, 0], [0, 1, 2]
    x = _tokens(rng, (2, 10), "int64")
    text = _model("int64", "[2,10]", "[2,3]", 2, 2, 1, "TF", pool=pool, counts=counts, indexes=indexes)
    got = check_model(text, {"x": x}, device=backend, oracle="ref")
    assert not got["y"][:, 0].any() and got["y"][:, 2].any()


def test_tfidf_input_shorter_than_ngrams(backend):
    x = np.array([[5, 6], [2, 2]], dtype=np.int64)
    text = _model("int64", "[2,2]", "[2,8]", 3, 3, 2, "TF")
    got = check_model(text, {"x": x}, device=backend, oracle="ref")
    assert not got["y"].any()


def test_tfidf_empty_length_level(backend):
    # No 1-grams in the pool (two equal starts), bigrams only; columns not in order.
    pool, counts, indexes = [5, 6, 7, 8, 6, 7], [0, 0], [2, 0, 1]
    x = np.array([5, 6, 7, 8, 6, 7, 5, 6, 9, 6, 7], dtype=np.int32)
    text = _model("int32", "[11]", "[3]", 2, 2, 1, "TF", pool=pool, counts=counts, indexes=indexes)
    check_model(text, {"x": x}, device=backend, oracle="ref")


def test_tfidf_large_values_compare_item_by_item(backend, rng):
    # A wide vocabulary and long n-grams overflow the packed window keys, so the
    # item-by-item comparison path runs; values far outside int32 are kept exact.
    big = [int(v) for v in rng.integers(-2**62, 2**62, size=40)]
    pool = big[:10] + big[10:40]  # ten 1-grams, then six 5-grams
    counts, indexes = [0, 10, 10, 10, 10], list(range(16))
    seq = np.array(big[10:20] + big[:4] + big[25:35], dtype=np.int64).reshape(2, 12)
    text = _model("int64", "[2,12]", "[2,16]", 1, 5, 1, "TF", pool=pool, counts=counts, indexes=indexes)
    got = check_model(text, {"x": seq}, device=backend, oracle="ref")
    assert got["y"][:, 10:].sum() > 0


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
    text = _model("int64", "[4]", "[8]", 1, 1, 0, "BM25")
    with pytest.raises(UnsupportedOpError) as err:
        parse_onnx(onnx.parser.parse_model(text))
    assert "BM25" in str(err.value)
