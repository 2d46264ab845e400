"""The Triton kernels of the fused layer norms: tensorkiln::SkipLayerNormalization
(tactics/cuda/skip_layer_norm.py) and tensorkiln::EmbedLayerNormalization
(tactics/cuda/embed_layer_norm.py). Both sum their terms into fp32 rows held in registers and
normalize them with `_normalize_rows`. Imports triton at the top: loaded only by the first launch,
so machines without triton import the package all the same."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _normalize_rows(total, mask, cols, col_ok, offsets, gamma_ptr, beta_ptr, y_ptr, sum_ptr, n, eps,
                    HAS_BETA: tl.constexpr, STORE_SUM: tl.constexpr):
    # total: [ROWS, BLOCK_N] fp32 sums. Mean and variance are two passes over the registers (no
    # E[x^2] - E[x]^2 cancellation); y and the sum are rounded once to their dtypes.
    if STORE_SUM:
        tl.store(sum_ptr + offsets, total.to(sum_ptr.dtype.element_ty), mask=mask)
    mean = tl.sum(total, axis=1) / n
    centered = tl.where(mask, total - mean[:, None], 0.0)
    var = tl.sum(centered * centered, axis=1) / n
    inv_std = tl.math.rsqrt(var + eps)
    # gamma and beta are read by every program: keep them in L2.
    gamma = tl.load(gamma_ptr + cols, mask=col_ok, other=0.0, eviction_policy="evict_last").to(tl.float32)
    y = centered * inv_std[:, None] * gamma[None, :]
    if HAS_BETA:
        y += tl.load(beta_ptr + cols, mask=col_ok, other=0.0, eviction_policy="evict_last").to(tl.float32)[None, :]
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def skip_layer_norm_kernel(x_ptr, skip_ptr, gamma_ptr, beta_ptr, y_ptr, sum_ptr, rows_total, n, skip_rows,
                           eps, HAS_BETA: tl.constexpr, STORE_SUM: tl.constexpr, WIDE_INDEX: tl.constexpr,
                           SKIP_REUSED: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    if WIDE_INDEX:
        rows = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < n
    mask = (rows < rows_total)[:, None] & col_ok[None, :]
    offsets = rows[:, None] * n + cols[None, :]
    skip_offsets = (rows % skip_rows)[:, None] * n + cols[None, :]
    # x (in a transformer, the GEMM output) and skip rows that are not broadcast are usually read
    # only here: evict them first, so L2 keeps y for the layers that read it next (a hint, not a
    # promise; BERT-base b64 on an H200, GPU kept busy: 10.8 -> 10.5 us).
    total = tl.load(x_ptr + offsets, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    if SKIP_REUSED:
        total += tl.load(skip_ptr + skip_offsets, mask=mask, other=0.0).to(tl.float32)
    else:
        total += tl.load(skip_ptr + skip_offsets, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    _normalize_rows(total, mask, cols, col_ok, offsets, gamma_ptr, beta_ptr, y_ptr, sum_ptr, n, eps,
                    HAS_BETA, STORE_SUM)


@triton.jit
def _gathered(ids_ptr, table_ptr, vocab, rows, row_ok, cols, col_ok, n):
    idx = tl.load(ids_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    idx = tl.where(idx < 0, idx + vocab, idx)
    found = row_ok & (idx >= 0) & (idx < vocab)
    return tl.load(table_ptr + idx[:, None] * n + cols[None, :], mask=found[:, None] & col_ok[None, :],
                   other=0.0).to(tl.float32)


@triton.jit
def embed_layer_norm_kernel(ids0_ptr, table0_ptr, vocab0, ids1_ptr, table1_ptr, vocab1, ids2_ptr, table2_ptr,
                            vocab2, dense_ptr, gamma_ptr, beta_ptr, y_ptr, sum_ptr, rows_total, n, dense_rows,
                            eps, LOOKUPS: tl.constexpr, HAS_DENSE: tl.constexpr, HAS_BETA: tl.constexpr,
                            STORE_SUM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < rows_total
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < n
    mask = row_ok[:, None] & col_ok[None, :]
    total = _gathered(ids0_ptr, table0_ptr, vocab0, rows, row_ok, cols, col_ok, n)
    if LOOKUPS > 1:
        total += _gathered(ids1_ptr, table1_ptr, vocab1, rows, row_ok, cols, col_ok, n)
    if LOOKUPS > 2:
        total += _gathered(ids2_ptr, table2_ptr, vocab2, rows, row_ok, cols, col_ok, n)
    if HAS_DENSE:
        dense_offsets = (rows % dense_rows)[:, None] * n + cols[None, :]
        total += tl.load(dense_ptr + dense_offsets, mask=mask, other=0.0).to(tl.float32)
    offsets = rows[:, None] * n + cols[None, :]
    _normalize_rows(total, mask, cols, col_ok, offsets, gamma_ptr, beta_ptr, y_ptr, sum_ptr, n, eps,
                    HAS_BETA, STORE_SUM)
