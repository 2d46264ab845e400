"""The Triton row-gather kernel. Imports triton at the top: loaded only by the first launch
(tactics/cuda/gather.py), so machines without triton import the package all the same."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gather_rows_kernel(data_ptr, idx_ptr, out_ptr, n_idx, rows, width,
                       BLOCK_I: tl.constexpr, BLOCK_W: tl.constexpr):
    # A [BLOCK_I indices, BLOCK_W columns] tile of the output: out[i, :] = data[wrap(idx[i]), :].
    i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    i_ok = i < n_idx
    w_ok = w < width
    idx = tl.load(idx_ptr + i, mask=i_ok, other=0).to(tl.int64)
    idx = tl.where(idx < 0, idx + rows, idx)
    found = i_ok & (idx >= 0) & (idx < rows)
    values = tl.load(data_ptr + idx[:, None] * width + w[None, :], mask=found[:, None] & w_ok[None, :], other=0)
    tl.store(out_ptr + i.to(tl.int64)[:, None] * width + w[None, :], values, mask=i_ok[:, None] & w_ok[None, :])
