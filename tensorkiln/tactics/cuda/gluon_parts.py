"""What the warp-specialised Gluon kernels share (attention_gluon_kernels.py, projected_attention_kernels.py):
the barriers of a loader feeding two consumers through a ring, and one block's softmax attention.

Imports triton's Gluon dialect at the top: imported only by the kernel modules, which the first launch loads.

`ready[s]`: stage s holds its next load (the loader's TMA arrives with the bytes); `empty[s]`: the consumer
that read stage s is done with it. `turn[w]`: consumer w's turn to wait on the ring. The consumers take
tiles in turns and must wait on the ring in tile order: an mbarrier parity wait is right only one phase
ahead of its barrier, and a consumer that ran ahead past a stage the other has not seen filled would pass
early.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, warpgroup_mma, warpgroup_mma_wait


@gluon.jit
def ring_barriers(STAGES: gl.constexpr):
    """(ready, empty, turn), initialized: STAGES ready and empty barriers, and the consumers' two turns."""
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    return ready, empty, turn


@gluon.jit
def attend(q, k, v, qk_scale, bias, S_LAYOUT: gl.constexpr, O_LAYOUT: gl.constexpr):
    """softmax(q kᵀ · qk_scale + bias) v for one block of queries over all its keys at once (they fit one
    block, so the softmax needs no running rescale), in fp32: q [M, Dk] in shared memory or in registers
    (the A-operand layout of S_LAYOUT), k [N, Dk] and v [N, Dv] in shared memory, bias [N] (slice of
    S_LAYOUT) in log2 units as qk_scale is, -inf for a key left out. A row left out for every key gives
    zeros, as ops/sdpa.py specifies. Normalized by one reciprocal per row."""
    BLOCK_M: gl.constexpr = q.shape[0]
    BLOCK_N: gl.constexpr = k.shape[0]
    BLOCK_DV: gl.constexpr = v.shape[1]
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=O_LAYOUT, k_width=2)
    scores = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, S_LAYOUT)
    scores = warpgroup_mma(q, k.permute((1, 0)), scores, use_acc=False, is_async=True)
    scores = warpgroup_mma_wait(num_outstanding=0, deps=(scores,))
    scores = scores * qk_scale + bias[None, :]
    row_max = gl.max(scores, 1)
    # Subtract 0, not -inf, from a row without keys.
    shift = gl.where(row_max == float("-inf"), 0.0, row_max)
    weights = gl.exp2(scores - shift[:, None])
    total = gl.sum(weights, 1)
    inverse = gl.convert_layout(gl.where(total > 0.0, 1.0 / total, 0.0), gl.SliceLayout(1, O_LAYOUT))
    acc = gl.zeros([BLOCK_M, BLOCK_DV], gl.float32, O_LAYOUT)
    acc = warpgroup_mma(gl.convert_layout(weights.to(v.dtype), p_layout), v, acc, use_acc=False, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    return acc * inverse[:, None]
