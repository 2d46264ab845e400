"""The Triton max-pooling kernel. Imports triton at the top: loaded only by the first launch
(tactics/cuda/pooling.py), so machines without triton import the package all the same."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def max_pool2d_kernel(x_ptr, y_ptr, P, C, OH, OW, H, W,
                      sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                      SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                      DH: tl.constexpr, DW: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    # One [BLOCK_P output pixels, BLOCK_C channels] tile; pixels flatten (n, oh, ow). Strides
    # are arguments, so one kernel serves NCHW and channels_last (Triton specialises a stride
    # of 1, which makes the contiguous dimension's loads coalesce).
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok = p < P
    c_ok = c < C
    ow = p % OW
    rest = p // OW
    oh = rest % OH
    n = rest // OH
    x_base = x_ptr + n.to(tl.int64) * sxn
    c_off = c.to(tl.int64) * sxc
    acc = tl.full([BLOCK_P, BLOCK_C], float("-inf"), x_ptr.dtype.element_ty)
    for kh in tl.static_range(KH):
        ih = oh * SH - PH + kh * DH
        h_ok = (ih >= 0) & (ih < H) & p_ok
        for kw in tl.static_range(KW):
            iw = ow * SW - PW + kw * DW
            ok = h_ok & (iw >= 0) & (iw < W)
            ptrs = x_base + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
            v = tl.load(ptrs[:, None] + c_off[None, :], mask=ok[:, None] & c_ok[None, :], other=float("-inf"))
            acc = tl.maximum(acc, v, propagate_nan=tl.PropagateNan.ALL)
    y_ptrs = y_ptr + n.to(tl.int64) * syn + oh.to(tl.int64) * syh + ow.to(tl.int64) * syw
    tl.store(y_ptrs[:, None] + c.to(tl.int64)[None, :] * syc, acc, mask=p_ok[:, None] & c_ok[None, :])
