"""What the warp-specialised Gluon kernels share: the barriers of a loader feeding two consumers through a ring.

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
from triton.experimental.gluon.language.nvidia.hopper import mbarrier


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
