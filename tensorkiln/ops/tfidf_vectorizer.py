"""TfIdfVectorizer: counts how often each n-gram of a pool occurs in every row of an
integer sequence, with skips between the n-gram's items, optionally IDF-weighted.

The pool (`pool_int64s`) holds the n-grams of each length back to back; `ngram_counts[k]`
is where the (k+1)-grams start. The i-th pool n-gram is counted into output column
`ngram_indexes[i]`. An n-gram of length n with skip distance d takes the items
s, s+d, ..., s+(n-1)d; distances 1..max_skip_count+1 are all counted, except for
unigrams, which skips do not change and so are counted once. When an n-gram appears
twice in the pool only the later entry counts, as in the ONNX reference.

`weights[i]` scales the i-th pool n-gram, as the schema says and onnxruntime does (the
ONNX reference evaluator indexes weights by output column instead; the two agree when
ngram_indexes is 0, 1, 2, ...). When several pool n-grams share a column, TF and TFIDF
add up, and IDF takes the weight of the last one in the pool that occurs, as onnxruntime.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..ir import DType, Node, TensorType
from .registry import REQUIRED, InferContext, Op, register

_MODES = ("TF", "IDF", "TFIDF")
# Window keys are the items' vocabulary positions in base (vocabulary size + 1); above
# this they could overflow int64 and the n-grams are compared item by item instead.
_KEY_LIMIT = 2 ** 62


def _output_size(attrs: dict[str, Any]) -> int:
    return max(attrs["ngram_indexes"]) + 1


def _pool_by_length(attrs: dict[str, Any]) -> dict[int, dict[tuple[int, ...], int]]:
    """n -> {n-gram: position in the pool's n-gram list} for the lengths in
    [min_gram_length, max_gram_length]."""
    pool, starts = attrs["pool_int64s"], attrs["ngram_counts"]
    by_length: dict[int, dict[tuple[int, ...], int]] = {}
    pool_index = 0  # position of the n-gram in the pool across all lengths, into ngram_indexes
    for k, start in enumerate(starts):
        n = k + 1
        end = starts[k + 1] if k + 1 < len(starts) else len(pool)
        count = max(end - start, 0) // n
        if attrs["min_gram_length"] <= n <= attrs["max_gram_length"]:
            grams = by_length.setdefault(n, {})
            for g in range(count):
                grams[tuple(pool[start + g * n: start + (g + 1) * n])] = pool_index + g
        pool_index += count
    return by_length


def _windows(x: torch.Tensor, n: int, skip_distance: int) -> torch.Tensor:
    """[rows, positions, n]: every n-gram of each row with `skip_distance` between its items."""
    span = (n - 1) * skip_distance + 1
    return x.unfold(1, span, 1)[:, :, ::skip_distance]


def _count_length(x: torch.Tensor, vocab: torch.Tensor, grams: dict[tuple[int, ...], int], n: int,
                  max_skip_count: int, out: torch.Tensor) -> None:
    """Adds the counts of the pool's n-grams of length n into `out` [rows, pool n-grams]."""
    device = x.device
    pool = torch.tensor(list(grams.keys()), dtype=torch.int64, device=device).reshape(len(grams), n)
    ids = torch.tensor(list(grams.values()), dtype=torch.int64, device=device)
    base = vocab.numel() + 1
    use_keys = base ** n < _KEY_LIMIT
    if use_keys:
        # Items outside the pool's vocabulary get code `base - 1`, which no pool n-gram holds.
        pool_codes = torch.searchsorted(vocab, pool)
        x_pos = torch.searchsorted(vocab, x).clamp(max=vocab.numel() - 1)
        x_codes = torch.where(vocab[x_pos] == x, x_pos, torch.full_like(x_pos, base - 1))
        powers = base ** torch.arange(n - 1, -1, -1, dtype=torch.int64, device=device)
        pool_keys = (pool_codes * powers).sum(-1)
        key_order = torch.argsort(pool_keys)
        sorted_keys, sorted_ids = pool_keys[key_order], ids[key_order]
    distances = range(1, max_skip_count + 2) if n > 1 else range(1, 2)
    for d in distances:
        if (n - 1) * d + 1 > x.shape[1]:
            break
        if use_keys:
            keys = (_windows(x_codes, n, d) * powers).sum(-1)
            at = torch.searchsorted(sorted_keys, keys).clamp(max=sorted_keys.numel() - 1)
            found = sorted_keys[at] == keys
            out.scatter_add_(1, sorted_ids[at], found.to(out.dtype))
        else:
            matches = (_windows(x, n, d).unsqueeze(2) == pool).all(-1)  # [rows, positions, pool]
            out.index_add_(1, ids, matches.sum(1).to(out.dtype))


@register
class TfIdfVectorizer(Op):
    name = "TfIdfVectorizer"
    since_opset = 9
    attrs = {"max_gram_length": REQUIRED, "max_skip_count": REQUIRED, "min_gram_length": REQUIRED,
             "mode": REQUIRED, "ngram_counts": REQUIRED, "ngram_indexes": REQUIRED,
             "pool_int64s": None, "pool_strings": None, "weights": None}

    def check(self, node: Node) -> Optional[str]:
        attrs = node.attrs
        if attrs.get("pool_strings") or node.inputs[0].dtype == DType.STRING:
            return "string tensors are not supported by the tensor runtime"
        if not attrs.get("pool_int64s"):
            return "pool_int64s is required (pool_strings is not supported)"
        if attrs.get("mode") not in _MODES:
            return f"mode {attrs.get('mode')!r} is not one of {', '.join(_MODES)}"
        indexes = attrs.get("ngram_indexes")
        if not indexes or min(indexes) < 0:
            return "ngram_indexes must be non-empty and non-negative"
        weights = attrs.get("weights")
        if weights and len(weights) != len(indexes):
            return f"weights has {len(weights)} entries for {len(indexes)} pool n-grams (ngram_indexes)"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        size = _output_size(ctx.attrs)
        shape = ctx.shape(0)
        if shape is None:
            return [TensorType(DType.FLOAT, None)]
        return [TensorType(DType.FLOAT, (size,) if len(shape) <= 1 else (shape[0], size))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        if x.dim() > 2:
            raise ValueError(f"TfIdfVectorizer input must be [C] or [N, C], got shape {tuple(x.shape)}")
        rows = (x.reshape(1, -1) if x.dim() <= 1 else x).to(torch.int64)
        device = x.device
        columns = torch.tensor(attrs["ngram_indexes"], dtype=torch.int64, device=device)
        counts = torch.zeros(rows.shape[0], columns.numel(), dtype=torch.float64, device=device)
        by_length = _pool_by_length(attrs)
        if rows.shape[1] > 0 and by_length:
            vocab = torch.unique(torch.tensor(attrs["pool_int64s"], dtype=torch.int64, device=device))
            for n, grams in by_length.items():
                if grams:
                    _count_length(rows, vocab, grams, n, attrs["max_skip_count"], counts)
        weights = attrs.get("weights")
        weight_per_gram = (torch.ones(columns.numel(), dtype=torch.float64, device=device) if not weights
                           else torch.tensor(weights, dtype=torch.float32, device=device).to(torch.float64))
        y = torch.zeros(rows.shape[0], _output_size(attrs), dtype=torch.float64, device=device)
        if attrs["mode"] == "IDF":
            # Each column takes the weight of the last pool n-gram of that column that occurs.
            gram_ids = torch.arange(columns.numel(), device=device).expand_as(counts)
            present_ids = torch.where(counts > 0, gram_ids, torch.full_like(gram_ids, -1))
            winner = torch.full(y.shape, -1, dtype=torch.int64, device=device)
            winner.scatter_reduce_(1, columns.expand_as(counts), present_ids, reduce="amax")
            y = torch.where(winner >= 0, weight_per_gram[winner.clamp(min=0)], y)
        else:
            scaled = counts * weight_per_gram if attrs["mode"] == "TFIDF" else counts
            y.index_add_(1, columns, scaled)
        y = y.to(torch.float32)
        return y.reshape(-1) if x.dim() <= 1 else y
