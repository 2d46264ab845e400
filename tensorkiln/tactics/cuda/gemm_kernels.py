"""The Triton GEMM with a fused epilogue. Imports triton at the top: loaded only by the first
launch (tactics/cuda/triton_gemm.py), so machines without triton import the package all the same."""

from __future__ import annotations

import triton
import triton.language as tl

# Activation codes (constexpr ACT); tactics/cuda/triton_gemm.py maps epilogue names to them.
NONE, RELU, GELU, GELU_TANH, SIGMOID, TANH, SILU = range(7)


@triton.jit
def _activate(y, ACT: tl.constexpr):
    if ACT == 1:
        y = tl.maximum(y, 0.0)
    elif ACT == 2:
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
    elif ACT == 3:
        inner = 0.7978845608028654 * (y + 0.044715 * y * y * y)
        y = 0.5 * y * (1.0 + (2.0 / (1.0 + tl.exp(-2.0 * inner)) - 1.0))
    elif ACT == 4:
        y = 1.0 / (1.0 + tl.exp(-y))
    elif ACT == 5:
        y = 2.0 / (1.0 + tl.exp(-2.0 * y)) - 1.0
    elif ACT == 6:
        y = y / (1.0 + tl.exp(-y))
    return y


@triton.jit
def _epilogue(acc, rm, rn, bias_ptr, res_ptr, M, N, srm, srn,
              HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, RES_AFTER: tl.constexpr, ACT: tl.constexpr):
    """Bias, residual and activation applied to the fp32 accumulator of rows rm, columns rn."""
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if HAS_RES:
        res = tl.load(res_ptr + rm.to(tl.int64)[:, None] * srm + rn[None, :] * srn,
                      mask=(rm < M)[:, None] & (rn < N)[None, :], other=0.0).to(tl.float32)
        if RES_AFTER:
            acc = _activate(acc, ACT) + res
        else:
            acc = _activate(acc + res, ACT)
    else:
        acc = _activate(acc, ACT)
    return acc


@triton.jit
def gemm_epilogue_kernel(a_ptr, b_ptr, bias_ptr, res_ptr, c_ptr, M, N, K, k_tiles,
                         sam, sak, sbk, sbn, srm, srn, scm, scn,
                         HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, RES_AFTER: tl.constexpr,
                         ACT: tl.constexpr, EVEN_K: tl.constexpr,
                         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    # Grouped tile order: GROUP_M row blocks share the same B columns while they are in L2.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BM)
    tiles_n = tl.cdiv(N, BN)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    # Rows and columns past the edge wrap around (their results are not stored): loads need
    # no M/N masks in the K loop.
    am = rm % M
    bn = rn % N
    rk = tl.arange(0, BK)
    a_ptrs = a_ptr + am.to(tl.int64)[:, None] * sam + rk[None, :] * sak
    b_ptrs = b_ptr + rk[:, None] * sbk + bn.to(tl.int64)[None, :] * sbn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, k_tiles):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            left = K - k * BK
            a = tl.load(a_ptrs, mask=rk[None, :] < left, other=0.0)
            b = tl.load(b_ptrs, mask=rk[:, None] < left, other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BK * sak
        b_ptrs += BK * sbk
    acc = _epilogue(acc, rm, rn, bias_ptr, res_ptr, M, N, srm, srn, HAS_BIAS, HAS_RES, RES_AFTER, ACT)
    c_ptrs = c_ptr + rm.to(tl.int64)[:, None] * scm + rn[None, :] * scn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rm < M)[:, None] & (rn < N)[None, :])


@triton.jit
def _tile_coords(tile, tiles_m, tiles_n, GROUP_M: tl.constexpr):
    per_group = GROUP_M * tiles_n
    first_m = (tile // per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    return first_m + (tile % per_group) % group_rows, (tile % per_group) // group_rows


@triton.jit
def gemm_tma_kernel(a_desc, b_desc, c_desc, bias_ptr, res_ptr, M, N, K, srm, srn,
                    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, RES_AFTER: tl.constexpr, ACT: tl.constexpr,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                    PROGRAMS: tl.constexpr):
    # Persistent Hopper form: PROGRAMS programs (one per multiprocessor) walk the output tiles;
    # A [M, K] and B [N, K] tiles arrive by TMA (out-of-range rows and columns read as zeros),
    # and the flattened loop lets the pipeliner fetch the next tile's operands during this
    # tile's epilogue. The epilogue runs on two [BM, BN/2] halves, so its staging buffer for the
    # TMA store takes half the shared memory (left to the operand pipeline).
    start = tl.program_id(0)
    tiles_m = tl.cdiv(M, BM)
    tiles_n = tl.cdiv(N, BN)
    k_tiles = tl.cdiv(K, BK)
    # The epilogue recomputes its tile's coordinates from its own counter: a value shared by the
    # flattened loop's prologue and epilogue trips Triton's pipeliner.
    tile_c = start - PROGRAMS
    for tile in tl.range(start, tiles_m * tiles_n, PROGRAMS, flatten=True):
        pid_m, pid_n = _tile_coords(tile, tiles_m, tiles_n, GROUP_M)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for ki in range(k_tiles):
            a = a_desc.load([pid_m * BM, ki * BK])
            b = b_desc.load([pid_n * BN, ki * BK])
            acc = tl.dot(a, b.T, acc)
        tile_c += PROGRAMS
        pid_m, pid_n = _tile_coords(tile_c, tiles_m, tiles_n, GROUP_M)
        rm = pid_m * BM + tl.arange(0, BM)
        left, right = tl.split(tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1)))
        rn = pid_n * BN + tl.arange(0, BN // 2)
        left = _epilogue(left, rm, rn, bias_ptr, res_ptr, M, N, srm, srn, HAS_BIAS, HAS_RES, RES_AFTER, ACT)
        c_desc.store([pid_m * BM, pid_n * BN], left.to(c_desc.dtype))
        rn += BN // 2
        right = _epilogue(right, rm, rn, bias_ptr, res_ptr, M, N, srm, srn, HAS_BIAS, HAS_RES, RES_AFTER, ACT)
        c_desc.store([pid_m * BM, pid_n * BN + BN // 2], right.to(c_desc.dtype))
