"""The Gluon form of the persistent short-sequence attention kernel (Hopper, warpgroup MMA).

Imports triton's Gluon dialect at the top: loaded only by the first launch
(tactics/cuda/triton_attention.py), so machines without it import the package all the same.

Triton's pipeliner placed the persistent kernel's TMA loads for the next tile after this tile's
math (attention_kernels.attention_tma_kernel), so a program's loads never overlapped its own
math. Here the loads of the tile NUM_BUF - 1 ahead go out before the math, through explicit
mbarriers; the softmax normalizes by one reciprocal per row and folds the scale and the mask
into one multiply-add. Measured on an H200 with BERT-base's layer at batch 64: 19.4 us against
the Triton kernel's 21.9 (inputs cold, walked in the same order).
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)

_LOG2_E = gl.constexpr(1.4426950408889634)


@gluon.jit
def _tile_coords(tile, m_blocks, heads, n_tiles):
    # Tiles are walked from the last batch to the first: the GEMM that wrote Q/K/V (in a transformer,
    # the step before) wrote the last rows last, so those are the ones L2 still holds (BERT-base b64
    # on an H200, after its QKV GEMM: 17.3 against 18.2-20.0 us in the forward order).
    tile = n_tiles - 1 - tile
    pid_m = tile % m_blocks
    bh = tile // m_blocks
    return bh // heads, bh % heads, pid_m


@gluon.jit
def _issue_loads(q_desc, k_desc, v_desc, tile, m_blocks, heads, n_tiles, bar, q_buf, k_buf, v_buf, pred):
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[2]
    b, h, pid_m = _tile_coords(tile, m_blocks, heads, n_tiles)
    mbarrier.expect(bar, q_desc.block_type.nbytes + k_desc.block_type.nbytes + v_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(q_desc, [b, h, pid_m * BLOCK_M, 0], bar, q_buf, pred)
    tma.async_copy_global_to_shared(k_desc, [b, h, 0, 0], bar, k_buf, pred)
    tma.async_copy_global_to_shared(v_desc, [b, h, 0, 0], bar, v_buf, pred)


@gluon.jit
def attention_gluon_kernel(q_desc, k_desc, v_desc, o_desc, mask_ptr, heads, s_q, s_k, m_blocks, n_tiles, qk_scale,
                           smb, smh, smm, smn,
                           HAS_MASK: gl.constexpr, MASK_ONE_ROW: gl.constexpr, EVEN_N: gl.constexpr,
                           NUM_BUF: gl.constexpr, num_warps: gl.constexpr):
    # Each program walks (batch, head, query block) tiles and takes all keys at once (they fit one
    # block), so the softmax needs no running rescale. Q/K/V arrive by TMA through 4-D [B, H, S, D]
    # descriptors of any strides (rows past the end read as zeros); the output leaves by a TMA
    # store. qk_scale and the mask are in log2 units, for exp2.
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[2]
    BLOCK_DK: gl.constexpr = q_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    BLOCK_DV: gl.constexpr = v_desc.block_type.shape[3]
    dtype: gl.constexpr = q_desc.dtype

    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_DV, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)

    q_bufs = gl.allocate_shared_memory(dtype, [NUM_BUF] + q_desc.block_type.shape, q_desc.layout)
    k_bufs = gl.allocate_shared_memory(dtype, [NUM_BUF] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [NUM_BUF] + v_desc.block_type.shape, v_desc.layout)
    o_buf = gl.allocate_shared_memory(dtype, o_desc.block_type.shape, o_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_BUF):
        mbarrier.init(bars.index(i), count=1)

    first = gl.program_id(0)
    step = gl.num_programs(0)
    for i in gl.static_range(NUM_BUF - 1):
        tile = first + i * step
        _issue_loads(q_desc, k_desc, v_desc, tile, m_blocks, heads, n_tiles, bars.index(i), q_bufs.index(i),
                     k_bufs.index(i), v_bufs.index(i), tile < n_tiles)

    cols = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    col_ok = cols < s_k
    count = 0
    for tile in range(first, n_tiles, step):
        # Before this tile's math: the loads NUM_BUF - 1 tiles ahead, into the buffers the last tile freed.
        ahead = tile + (NUM_BUF - 1) * step
        slot_ahead = (count + NUM_BUF - 1) % NUM_BUF
        _issue_loads(q_desc, k_desc, v_desc, ahead, m_blocks, heads, n_tiles, bars.index(slot_ahead),
                     q_bufs.index(slot_ahead), k_bufs.index(slot_ahead), v_bufs.index(slot_ahead), ahead < n_tiles)
        slot = count % NUM_BUF
        mbarrier.wait(bars.index(slot), (count // NUM_BUF) & 1)
        q = q_bufs.index(slot).reshape([BLOCK_M, BLOCK_DK])
        k = k_bufs.index(slot).reshape([BLOCK_N, BLOCK_DK])
        v = v_bufs.index(slot).reshape([BLOCK_N, BLOCK_DV])
        scores = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
        scores = warpgroup_mma(q, k.permute((1, 0)), scores, use_acc=False, is_async=True)
        b, h, pid_m = _tile_coords(tile, m_blocks, heads, n_tiles)
        m_base = mask_ptr + b * smb + h * smh
        if HAS_MASK and MASK_ONE_ROW:
            # One row for every query: loaded while the product runs.
            bias = gl.load(m_base + cols * smn, mask=col_ok, other=0.0).to(gl.float32) * _LOG2_E
        scores = warpgroup_mma_wait(num_outstanding=0, deps=(scores,))
        if HAS_MASK and MASK_ONE_ROW:
            scores = scores * qk_scale + bias[None, :]
        elif HAS_MASK:
            # A row per query: loaded into the scores' registers, which a second tile of them would overflow.
            rows = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, s_layout))
            scores = scores * qk_scale + gl.load(m_base + rows[:, None] * smm + cols[None, :] * smn,
                                                 mask=(rows < s_q)[:, None] & col_ok[None, :],
                                                 other=0.0).to(gl.float32) * _LOG2_E
        else:
            scores = scores * qk_scale
        if not EVEN_N:
            scores = gl.where(col_ok[None, :], scores, float("-inf"))
        row_max = gl.max(scores, 1)
        # A row masked (-inf) for every key gives zeros, as ops/sdpa.py specifies: subtract 0, not -inf.
        shift = gl.where(row_max == float("-inf"), 0.0, row_max)
        weights = gl.exp2(scores - shift[:, None])
        total = gl.sum(weights, 1)
        inverse = gl.convert_layout(gl.where(total > 0.0, 1.0 / total, 0.0), gl.SliceLayout(1, o_layout))
        acc = gl.zeros([BLOCK_M, BLOCK_DV], gl.float32, o_layout)
        acc = warpgroup_mma(gl.convert_layout(weights.to(dtype), p_layout), v, acc, use_acc=False, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        out = acc * inverse[:, None]
        # The last tile's store must have read the buffer before it is written again.
        tma.store_wait(pendings=0)
        o_buf.reshape([BLOCK_M, BLOCK_DV]).store(out.to(dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [b, h, pid_m * BLOCK_M, 0], o_buf)
        count += 1
    tma.store_wait(pendings=0)
    for i in gl.static_range(NUM_BUF):
        mbarrier.invalidate(bars.index(i))
