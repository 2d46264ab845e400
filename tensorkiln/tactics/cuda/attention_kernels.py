"""The Triton fused-attention kernel. Imports triton at the top: loaded only by the first launch
(tactics/cuda/triton_attention.py), so machines without triton import the package all the same."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def attention_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, heads, s_q, s_k, d_qk, d_v, scale,
                     sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
                     smb, smh, smm, smn, sob, soh, som, sod,
                     HAS_MASK: tl.constexpr, MASK_ONE_ROW: tl.constexpr, EVEN_N: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DK: tl.constexpr, BLOCK_DV: tl.constexpr,
                     FP32_PRODUCTS: tl.constexpr = "tf32"):
    # One program: BLOCK_M query rows of one (batch, head), against all keys in BLOCK_N steps with
    # the online softmax (running max and sum in fp32). Every operand is addressed by its strides
    # (a broadcast mask has stride 0), so the head-split views of a merged QKV GEMM and a
    # [B, 1, 1, L] mask are read in place. float32 operands multiply as FP32_PRODUCTS says
    # ("tf32" on tensor cores, or "ieee"); half-precision ones always on tensor cores.
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dk = tl.arange(0, BLOCK_DK)
    dv = tl.arange(0, BLOCK_DV)
    row_ok = rows < s_q
    q = tl.load(q_ptr + b * sqb + h * sqh + rows[:, None] * sqm + dk[None, :] * sqd,
                mask=row_ok[:, None] & (dk < d_qk)[None, :], other=0.0)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    m_base = mask_ptr + b * smb + h * smh
    running_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    running_sum = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)
    for start in range(0, s_k, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < s_k
        k = tl.load(k_base + cols[None, :] * skn + dk[:, None] * skd,
                    mask=col_ok[None, :] & (dk < d_qk)[:, None], other=0.0)
        if q.dtype == tl.float32:
            scores = tl.dot(q, k, input_precision=FP32_PRODUCTS) * scale
        else:
            scores = tl.dot(q, k) * scale
        if HAS_MASK:
            if MASK_ONE_ROW:
                # One mask row for every query (BERT's [B, 1, 1, L] padding mask): load it once per block.
                scores += tl.load(m_base + cols * smn, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            else:
                scores += tl.load(m_base + rows[:, None] * smm + cols[None, :] * smn,
                                  mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
        if not EVEN_N:
            scores = tl.where(col_ok[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, 1))
        # A row whose keys so far are all masked (-inf) keeps max -inf: subtract 0 instead, so its
        # weights are exp(-inf) = 0 rather than NaN.
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        weights = tl.exp(scores - shift[:, None])
        rescale = tl.exp(running_max - shift)
        running_sum = running_sum * rescale + tl.sum(weights, 1)
        v = tl.load(v_base + cols[:, None] * svn + dv[None, :] * svd,
                    mask=col_ok[:, None] & (dv < d_v)[None, :], other=0.0)
        if v.dtype == tl.float32:
            acc = acc * rescale[:, None] + tl.dot(weights, v, input_precision=FP32_PRODUCTS)
        else:
            acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v)
        running_max = new_max
    # A row masked (-inf) for every key gives zeros, as ops/sdpa.py specifies (torch's kernels do too).
    # One reciprocal per row, not a division per element.
    out = acc * tl.where(running_sum > 0.0, 1.0 / running_sum, 0.0)[:, None]
    tl.store(o_ptr + b * sob + h * soh + rows[:, None] * som + dv[None, :] * sod, out.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (dv < d_v)[None, :])


@triton.jit
def attention_tma_kernel(q_desc, k_desc, v_desc, mask_ptr, o_desc, heads, s_q, s_k, m_blocks, n_tiles, qk_scale,
                         smb, smh, smm, smn,
                         HAS_MASK: tl.constexpr, MASK_ONE_ROW: tl.constexpr, EVEN_N: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DK: tl.constexpr,
                         BLOCK_DV: tl.constexpr, STAGES: tl.constexpr):
    # Persistent Hopper form for sequences that fit one key block: each program walks query
    # tiles (BLOCK_M rows of one batch and head) and takes all keys at once, so the softmax needs
    # no running rescale. Q/K/V tiles arrive by TMA through 4-D [B, H, S, D] descriptors (any
    # strides: the head-split views of a merged QKV product are read in place; rows past the end
    # read as zeros), and the pipelined loop fetches the next tile's operands during this tile's
    # math. The scale and the mask are taken in log2 units, for exp2.
    for step in tl.range(tl.program_id(0), n_tiles, tl.num_programs(0), num_stages=STAGES):
        # From the last batch to the first: the GEMM that wrote Q/K/V wrote the last rows last, so
        # those are the ones L2 still holds.
        tile = n_tiles - 1 - step
        pid_m = tile % m_blocks
        bh = tile // m_blocks
        b = bh // heads
        h = bh % heads
        q = q_desc.load([b, h, pid_m * BLOCK_M, 0]).reshape(BLOCK_M, BLOCK_DK)
        k = k_desc.load([b, h, 0, 0]).reshape(BLOCK_N, BLOCK_DK)
        v = v_desc.load([b, h, 0, 0]).reshape(BLOCK_N, BLOCK_DV)
        scores = tl.dot(q, k.T) * qk_scale
        cols = tl.arange(0, BLOCK_N)
        col_ok = cols < s_k
        if HAS_MASK:
            m_base = mask_ptr + b * smb + h * smh
            if MASK_ONE_ROW:
                scores += (tl.load(m_base + cols * smn, mask=col_ok, other=0.0).to(tl.float32)
                           * 1.4426950408889634)[None, :]
            else:
                rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
                scores += tl.load(m_base + rows[:, None] * smm + cols[None, :] * smn,
                                  mask=(rows < s_q)[:, None] & col_ok[None, :], other=0.0).to(tl.float32) \
                    * 1.4426950408889634
        if not EVEN_N:
            scores = tl.where(col_ok[None, :], scores, float("-inf"))
        row_max = tl.max(scores, 1)
        # A row masked (-inf) for every key gives zeros, as ops/sdpa.py specifies: subtract 0, not -inf.
        shift = tl.where(row_max == float("-inf"), 0.0, row_max)
        weights = tl.exp2(scores - shift[:, None])
        total = tl.sum(weights, 1)
        acc = tl.dot(weights.to(v.dtype), v)
        out = acc * tl.where(total > 0.0, 1.0 / total, 0.0)[:, None]
        o_desc.store([b, h, pid_m * BLOCK_M, 0], out.to(o_desc.dtype).reshape(1, 1, BLOCK_M, BLOCK_DV))
