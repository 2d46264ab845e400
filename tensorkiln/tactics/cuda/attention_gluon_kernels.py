"""The warp-specialised Gluon form of the persistent short-sequence attention kernel (Hopper).

Imports triton's Gluon dialect at the top: loaded only by the first launch
(tactics/cuda/triton_attention.py), so machines without it import the package all the same.

Triton's pipeliner placed the persistent kernel's TMA loads for the next tile after this tile's
math (attention_kernels.attention_tma_kernel), so a program's loads never overlapped its own
math. Here one loader warp keeps a ring of NUM_BUF Q/K/V stages full while two consumer
warpgroups take alternate tiles, each freeing its stage as soon as its second product has read
it. Consumers normalize by one reciprocal per row and fold the scale and the mask into one
multiply-add. On an H200, BERT-base's layer at batch 64 right after its QKV GEMM: 15.8 us,
against 17.2 for the same math with the loads issued by the consumers themselves (two programs
per multiprocessor) and 21.9 for the Triton kernel.

Masks with a row per query are not taken (the tactic sends those to the Triton kernel): their
scores-sized load does not fit the consumers' registers.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from .gluon_parts import attend, ring_barriers

_LOG2_E = gl.constexpr(1.4426950408889634)


@gluon.jit
def _tile_coords(j, first, step, n_tiles, m_blocks, heads):
    # This program's j-th tile, walked from the last batch to the first: the GEMM that wrote Q/K/V
    # (in a transformer, the step before) wrote the last rows last, so those are the ones L2 still
    # holds (BERT-base b64 on an H200, after its QKV GEMM: 17.3 against 18.2-20.0 us forward).
    tile = n_tiles - 1 - (first + j * step)
    pid_m = tile % m_blocks
    bh = tile // m_blocks
    return bh // heads, bh % heads, pid_m


@gluon.jit
def _loader(descs, buffers, barriers, first, step, n_tiles, m_blocks, heads, s_k, qk_scale, mask_ptr, smb, smh,
            smn, HAS_MASK: gl.constexpr, EVEN_N: gl.constexpr):
    q_desc, k_desc, v_desc, o_desc = descs
    q_bufs, k_bufs, v_bufs, o_bufs = buffers
    ready, empty, turn = barriers
    NUM_BUF: gl.constexpr = q_bufs.type.shape[0]
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[2]
    for j in range(gl.cdiv(n_tiles - first, step)):
        stage = j % NUM_BUF
        # mbarriers start with phase 1 complete: the first pass over the ring does not wait.
        mbarrier.wait(empty.index(stage), ((j // NUM_BUF) & 1) ^ 1)
        b, h, pid_m = _tile_coords(j, first, step, n_tiles, m_blocks, heads)
        bar = ready.index(stage)
        mbarrier.expect(bar, q_desc.block_type.nbytes + k_desc.block_type.nbytes + v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [b, h, pid_m * BLOCK_M, 0], bar, q_bufs.index(stage))
        tma.async_copy_global_to_shared(k_desc, [b, h, 0, 0], bar, k_bufs.index(stage))
        tma.async_copy_global_to_shared(v_desc, [b, h, 0, 0], bar, v_bufs.index(stage))


@gluon.jit
def _consume(WHICH: gl.constexpr, descs, buffers, barriers, first, step, n_tiles, m_blocks, heads, s_k, qk_scale,
             mask_ptr, smb, smh, smn, HAS_MASK: gl.constexpr, EVEN_N: gl.constexpr):
    # Tiles WHICH, WHICH + 2, ... of this program, all keys at once (they fit one block), so the
    # softmax needs no running rescale. qk_scale and the mask are in log2 units, for exp2.
    q_desc, k_desc, v_desc, o_desc = descs
    q_bufs, k_bufs, v_bufs, o_bufs = buffers
    ready, empty, turn = barriers
    NUM_BUF: gl.constexpr = q_bufs.type.shape[0]
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[2]
    BLOCK_DK: gl.constexpr = q_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    BLOCK_DV: gl.constexpr = v_desc.block_type.shape[3]
    dtype: gl.constexpr = q_desc.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_DV, 16])
    o_buf = o_bufs.index(WHICH).reshape([BLOCK_M, BLOCK_DV])
    cols = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    col_ok = cols < s_k
    for j in range(WHICH, gl.cdiv(n_tiles - first, step), 2):
        stage = j % NUM_BUF
        b, h, pid_m = _tile_coords(j, first, step, n_tiles, m_blocks, heads)
        if HAS_MASK:
            bias = gl.load(mask_ptr + b * smb + h * smh + cols * smn, mask=col_ok, other=0.0).to(gl.float32) * _LOG2_E
        else:
            bias = gl.zeros([BLOCK_N], gl.float32, gl.SliceLayout(0, s_layout))
        if not EVEN_N:
            bias = gl.where(col_ok, bias, float("-inf"))  # keys past the end of the block
        # The consumers wait on the ring in tile order: a parity wait is right only one phase ahead of its
        # barrier, and a consumer that ran ahead past a stage the other has not seen filled would pass early.
        mbarrier.wait(turn.index(WHICH), ((j // 2) & 1) ^ (1 - WHICH))
        mbarrier.wait(ready.index(stage), (j // NUM_BUF) & 1)
        mbarrier.arrive(turn.index(1 - WHICH), count=1)
        q = q_bufs.index(stage).reshape([BLOCK_M, BLOCK_DK])
        k = k_bufs.index(stage).reshape([BLOCK_N, BLOCK_DK])
        v = v_bufs.index(stage).reshape([BLOCK_N, BLOCK_DV])
        out = attend(q, k, v, qk_scale, bias, s_layout, o_layout)
        mbarrier.arrive(empty.index(stage), count=1)
        # This consumer's last store must have read the buffer before it is written again.
        tma.store_wait(pendings=0)
        o_buf.store(out.to(dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [b, h, pid_m * BLOCK_M, 0], o_bufs.index(WHICH))
    tma.store_wait(pendings=0)


@gluon.jit
def _consumer_0(descs, buffers, barriers, first, step, n_tiles, m_blocks, heads, s_k, qk_scale, mask_ptr, smb, smh,
                smn, HAS_MASK: gl.constexpr, EVEN_N: gl.constexpr):
    _consume(0, descs, buffers, barriers, first, step, n_tiles, m_blocks, heads, s_k, qk_scale, mask_ptr, smb, smh,
             smn, HAS_MASK, EVEN_N)


@gluon.jit
def _consumer_1(descs, buffers, barriers, first, step, n_tiles, m_blocks, heads, s_k, qk_scale, mask_ptr, smb, smh,
                smn, HAS_MASK: gl.constexpr, EVEN_N: gl.constexpr):
    _consume(1, descs, buffers, barriers, first, step, n_tiles, m_blocks, heads, s_k, qk_scale, mask_ptr, smb, smh,
             smn, HAS_MASK, EVEN_N)


@gluon.jit
def attention_gluon_kernel(q_desc, k_desc, v_desc, o_desc, mask_ptr, heads, s_k, m_blocks, n_tiles, qk_scale,
                           smb, smh, smn, HAS_MASK: gl.constexpr, EVEN_N: gl.constexpr, NUM_BUF: gl.constexpr,
                           CONSUMER_REGS: gl.constexpr, num_warps: gl.constexpr):
    # One program per multiprocessor walks its (batch, head, query block) tiles. Q/K/V arrive by TMA
    # through 4-D [B, H, S, D] descriptors of any strides (rows past the end read as zeros); the
    # output leaves by TMA stores. The mask (if any) is one row of keys per batch and head.
    dtype: gl.constexpr = q_desc.dtype
    q_bufs = gl.allocate_shared_memory(dtype, [NUM_BUF] + q_desc.block_type.shape, q_desc.layout)
    k_bufs = gl.allocate_shared_memory(dtype, [NUM_BUF] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [NUM_BUF] + v_desc.block_type.shape, v_desc.layout)
    o_bufs = gl.allocate_shared_memory(dtype, [2] + o_desc.block_type.shape, o_desc.layout)
    ready, empty, turn = ring_barriers(NUM_BUF)
    args = ((q_desc, k_desc, v_desc, o_desc), (q_bufs, k_bufs, v_bufs, o_bufs), (ready, empty, turn), gl.program_id(0),
            gl.num_programs(0), n_tiles, m_blocks, heads, s_k, qk_scale, mask_ptr, smb, smh, smn, HAS_MASK, EVEN_N)
    # The first consumer runs in the kernel's own num_warps (4); the second and the loader are workers.
    gl.warp_specialize([(_consumer_0, args), (_consumer_1, args), (_loader, args)], [4, 1], [CONSUMER_REGS, 24])
