"""The warp-specialised Gluon kernel of tensorkiln::ProjectedAttention: the Q/K/V projection and the attention
in one pass (Hopper).

Imports triton's Gluon dialect at the top: loaded only by the first launch
(tactics/cuda/projected_attention.py), so machines without it import the package all the same.

One tile is one (sequence, head): 128 rows of x [B*S, E] times the head's packed weight rows
wt [H*3*D, E] (its D query rows, D key rows, D value rows), plus the bias, then
softmax(q kᵀ · scale + mask) v for those 128 queries over the same 128 keys, stored to out [B*S, H*D]
at column h*D. The projection never goes to memory: q stays in registers (the first product's
operand), k and v go to shared memory (the products' other operands). A loader warp feeds a ring of
(x, W_qk, W_v) k-steps by TMA; two consumer warpgroups take alternate tiles, so one's attention
runs under the other's projection. On an H200 at BERT-base b64 (12 layers in one CUDA graph):
46.9 us per layer with 4 stages (51.5 with 3), against 63.6 for cuBLAS's addmm then the Gluon
attention kernel (53.9 for the addmm alone).

q and k come from one [128, 2D] accumulator (one n=2D product per k-step instead of two of n=D:
shared-memory reads per product) and are split in registers; the bias starts the accumulators.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)

from .gluon_parts import attend, ring_barriers

_LOG2_E = gl.constexpr(1.4426950408889634)


@gluon.jit
def _tile_coords(j, first, step, heads):
    # This program's j-th tile as (sequence, head), sequence-major: the programs running at once share a
    # few sequences' rows of x. (Last sequence first and head-major measured the same: BENCHMARKS.md.)
    tile = first + j * step
    return tile // heads, tile % heads


@gluon.jit
def _loader(descs, bufs, bars, heads, n_tiles, K):
    x_desc, wqk_desc, wv_desc, o_desc = descs
    x_bufs, wqk_bufs, wv_bufs, kv_bufs = bufs
    ready, empty, turn = bars
    S: gl.constexpr = x_bufs.type.shape[0]
    BM: gl.constexpr = x_desc.block_type.shape[0]
    BK: gl.constexpr = x_desc.block_type.shape[1]
    D: gl.constexpr = wv_desc.block_type.shape[0]
    k_steps = gl.cdiv(K, BK)
    first = gl.program_id(0)
    step = gl.num_programs(0)
    i = 0
    for j in range(gl.cdiv(n_tiles - first, step)):
        b, h = _tile_coords(j, first, step, heads)
        for kk in range(k_steps):
            s = i % S
            mbarrier.wait(empty.index(s), ((i // S) & 1) ^ 1)
            bar = ready.index(s)
            mbarrier.expect(bar, x_desc.block_type.nbytes + wqk_desc.block_type.nbytes + wv_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(x_desc, [b * BM, kk * BK], bar, x_bufs.index(s))
            tma.async_copy_global_to_shared(wqk_desc, [h * 3 * D, kk * BK], bar, wqk_bufs.index(s))
            tma.async_copy_global_to_shared(wv_desc, [h * 3 * D + 2 * D, kk * BK], bar, wv_bufs.index(s))
            i += 1


@gluon.jit
def _consume(WHICH: gl.constexpr, descs, bufs, bars, heads, n_tiles, K, bias_ptr, mask_ptr, mask_stride, qk_scale,
             HAS_MASK: gl.constexpr):
    x_desc, wqk_desc, wv_desc, o_desc = descs
    x_bufs, wqk_bufs, wv_bufs, kv_bufs = bufs
    ready, empty, turn = bars
    S: gl.constexpr = x_bufs.type.shape[0]
    BM: gl.constexpr = x_desc.block_type.shape[0]
    BK: gl.constexpr = x_desc.block_type.shape[1]
    D: gl.constexpr = wv_desc.block_type.shape[0]
    dtype: gl.constexpr = x_desc.dtype
    qk_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, 2 * D, 16])
    v_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, D, 16])
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BM, 16])
    q_op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
    k_buf = kv_bufs.index(2 * WHICH)
    v_buf = kv_bufs.index(2 * WHICH + 1)
    k_steps = gl.cdiv(K, BK)
    first = gl.program_id(0)
    step = gl.num_programs(0)
    qk_cols = gl.arange(0, 2 * D, layout=gl.SliceLayout(0, qk_layout))
    v_cols = gl.arange(0, D, layout=gl.SliceLayout(0, v_layout))
    keys = gl.arange(0, BM, layout=gl.SliceLayout(0, s_layout))
    for j in range(WHICH, gl.cdiv(n_tiles - first, step), 2):
        b, h = _tile_coords(j, first, step, heads)
        i0 = j * k_steps
        # The accumulators start from the bias: the first product adds to it.
        qk_bias = gl.load(bias_ptr + h * 3 * D + qk_cols).to(gl.float32)
        qk = gl.zeros([BM, 2 * D], gl.float32, qk_layout) + qk_bias[None, :]
        v_bias = gl.load(bias_ptr + h * 3 * D + 2 * D + v_cols).to(gl.float32)
        v = gl.zeros([BM, D], gl.float32, v_layout) + v_bias[None, :]
        # Turns keep the consumers' ring waits in tile order (a parity wait is right one phase ahead only).
        mbarrier.wait(turn.index(WHICH), ((j // 2) & 1) ^ (1 - WHICH))
        s = i0 % S
        mbarrier.wait(ready.index(s), (i0 // S) & 1)
        qk = warpgroup_mma(x_bufs.index(s), wqk_bufs.index(s).permute((1, 0)), qk, is_async=True)
        v = warpgroup_mma(x_bufs.index(s), wv_bufs.index(s).permute((1, 0)), v, is_async=True)
        qk, v = warpgroup_mma_wait(num_outstanding=2, deps=(qk, v))
        for kk in range(1, k_steps):
            i = i0 + kk
            s = i % S
            mbarrier.wait(ready.index(s), (i // S) & 1)
            qk = warpgroup_mma(x_bufs.index(s), wqk_bufs.index(s).permute((1, 0)), qk, is_async=True)
            v = warpgroup_mma(x_bufs.index(s), wv_bufs.index(s).permute((1, 0)), v, is_async=True)
            qk, v = warpgroup_mma_wait(num_outstanding=2, deps=(qk, v))
            mbarrier.arrive(empty.index((i - 1) % S), count=1)
        mbarrier.arrive(turn.index(1 - WHICH), count=1)
        qk, v = warpgroup_mma_wait(num_outstanding=0, deps=(qk, v))
        mbarrier.arrive(empty.index((i0 + k_steps - 1) % S), count=1)
        q, k = gl.split(qk.reshape([BM, 2, D]).permute((0, 2, 1)))
        # k_buf held the last tile's output until its TMA store read it.
        tma.store_wait(pendings=0)
        k_buf.store(k.to(dtype))
        v_buf.store(v.to(dtype))
        fence_async_shared()
        q_op = gl.convert_layout(q.to(dtype), q_op_layout)
        if HAS_MASK:
            bias = gl.load(mask_ptr + b * mask_stride + keys).to(gl.float32) * _LOG2_E
        else:
            bias = gl.zeros([BM], gl.float32, gl.SliceLayout(0, s_layout))
        out = attend(q_op, k_buf, v_buf, qk_scale, bias, s_layout, v_layout)
        k_buf.store(out.to(dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [b * BM, h * D], k_buf)
    tma.store_wait(pendings=0)


@gluon.jit
def _consumer_0(descs, bufs, bars, heads, n_tiles, K, bias_ptr, mask_ptr, mask_stride, qk_scale,
                HAS_MASK: gl.constexpr):
    _consume(0, descs, bufs, bars, heads, n_tiles, K, bias_ptr, mask_ptr, mask_stride, qk_scale, HAS_MASK)


@gluon.jit
def _consumer_1(descs, bufs, bars, heads, n_tiles, K, bias_ptr, mask_ptr, mask_stride, qk_scale,
                HAS_MASK: gl.constexpr):
    _consume(1, descs, bufs, bars, heads, n_tiles, K, bias_ptr, mask_ptr, mask_stride, qk_scale, HAS_MASK)


@gluon.jit
def _loader_part(descs, bufs, bars, heads, n_tiles, K, bias_ptr, mask_ptr, mask_stride, qk_scale,
                 HAS_MASK: gl.constexpr):
    _loader(descs, bufs, bars, heads, n_tiles, K)


@gluon.jit
def qkv_attention_kernel(x_desc, wqk_desc, wv_desc, o_desc, bias_ptr, mask_ptr, mask_stride, heads, n_tiles, K,
                         qk_scale, HAS_MASK: gl.constexpr, STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                         num_warps: gl.constexpr):
    dtype: gl.constexpr = x_desc.dtype
    x_bufs = gl.allocate_shared_memory(dtype, [STAGES] + x_desc.block_type.shape, x_desc.layout)
    wqk_bufs = gl.allocate_shared_memory(dtype, [STAGES] + wqk_desc.block_type.shape, wqk_desc.layout)
    wv_bufs = gl.allocate_shared_memory(dtype, [STAGES] + wv_desc.block_type.shape, wv_desc.layout)
    # k, v of each consumer (the k buffer then stages its output for the TMA store)
    kv_bufs = gl.allocate_shared_memory(dtype, [4] + o_desc.block_type.shape, o_desc.layout)
    ready, empty, turn = ring_barriers(STAGES)
    args = ((x_desc, wqk_desc, wv_desc, o_desc), (x_bufs, wqk_bufs, wv_bufs, kv_bufs), (ready, empty, turn), heads,
            n_tiles, K, bias_ptr, mask_ptr, mask_stride, qk_scale, HAS_MASK)
    gl.warp_specialize([(_consumer_0, args), (_consumer_1, args), (_loader_part, args)], [4, 1], [CONSUMER_REGS, 24])
