""""triton_m<rows>" tactics for tensorkiln::ScaledDotProductAttention: a Triton flash-attention kernel.

cuDNN's and FlashAttention's kernels are built for long sequences: on BERT-base (sequence 128,
head dim 64) they run one CTA per 128 query rows and, at batch 1, leave most of the GPU idle
behind a few heads. This kernel (attention_kernels.py) reads Q, K, V and the additive mask
through their strides (the head-split views of a merged QKV GEMM, a [B, 1, 1, L] mask at stride
0), keeps the scores of one query block in registers with the online softmax in fp32, and writes
the output in Q's memory order, so the transpose and reshape that merge the heads again are views.

The query-block heights are separate tactics (as TensorRT's kernel variants are): the tuner
times each against cuDNN and the others on the layer's shapes and keeps the fastest, so the
short blocks win where there are few heads and the tall ones where there are many.

"triton_tma_m<rows>" are the persistent Hopper form for sequences whose keys fit one block
(BERT's 128): all keys at once (no running rescale), Q/K/V tiles by TMA, and the next tile's
operands fetched during this tile's math; at batch 64 it beats the m64 kernel by 9-14%.
"gluon_tma_m128" is that kernel warp-specialised in Triton's Gluon dialect (Hopper only): a
loader warp keeps a ring of stages full for two consumer warpgroups (attention_gluon_kernels.py).

fp16/bf16: the products run on tensor cores with fp32 accumulation, and the softmax weights are
rounded to the input dtype before the product with V, as the reference's softmax output is.
float32 (the "triton_m*" tiles; the TMA tiles' shared memory holds half-precision tiles only):
the products run in TF32 on tensor cores where the engine allows TF32 (the default on CUDA, as
for its GEMMs), else in full fp32 ("ieee"). torch's float32 kernels for BERT's attention (the
memory-efficient one, or the math path's two products) take the role the flash kernels have in
fp16; this kernel is one more candidate the tuner times against them.
"""

from __future__ import annotations

import functools

import importlib.util
from typing import Any, Optional

import torch

from ...ir import DType, Node
from ._common import (FAST_FLOATS, HALF_FLOATS, OutputFn, dtype_reason, first_output, fresh_output, input_dtype,
                      input_shape, multiprocessor_count, next_power_of_2, register, shared_memory_per_block,
                      tf32_allowed, triton_missing)
from .attention import _fused_operands, _mask_4d, _mask_reason, _same_batch

# name -> (BLOCK_M query rows, BLOCK_N keys per step, warps, pipeline stages). Measured on an H200
# with BERT-base's layer (12 heads, sequence 128, head dim 64, fp16, [B, 1, 1, 128] mask, Q/K/V
# strided views of one QKV product), the best of eleven configurations: batch 64, m64 22.0 us
# (cuDNN 26.2, 128 rows 23.8, m16 48.0); batch 1, m16 3.4 us (cuDNN 6.8, m64 3.6, 128 rows 4.7).
TILES = {
    "m64": (64, 64, 4, 2),
    "m16": (16, 128, 4, 2),
}
# Head dims above this do not fit the [BLOCK_M, head dim] accumulator in registers (float32
# operands take twice the registers and shared memory of half-precision ones).
MAX_HEAD_DIM = 256
MAX_FP32_HEAD_DIM = 128

# The persistent TMA kernel (attention_kernel_tma), for sequences whose keys fit one block:
# name -> (BLOCK_M query rows, warps, pipeline stages, most keys, largest head dim); the keys and
# head dims bound the [BLOCK_M, keys] scores and [BLOCK_M, head dim] accumulator in registers.
# Measured on an H200 with BERT-base's layer at batch 64 (as above), in two runs: 128 rows with 4
# warps and two programs per multiprocessor, 18.8-19.7 us against the m64 kernel's 21.6-21.9 (one
# or three programs per multiprocessor: 29.5, 23.4; 64 rows: 22.5; 8 warps: 27.5). At batch 8 the
# 64-row tile wins (4.3 us against m64's 4.9).
# At batch 1 (96 tiles of 16 rows) the 16-row tile took 3.0 us against the m16 kernel's 3.4.
TMA_TILES = {
    "tma_m128": (128, 4, 2, 128, 64),
    "tma_m64": (64, 4, 2, 256, 128),
    "tma_m16": (16, 4, 2, 256, 128),
}
_TMA_PROGRAMS_PER_SM = 2
# The warp-specialised Gluon kernel (attention_gluon_kernels.py): Q/K/V stages in its ring; registers
# per consumer thread (the loader warpgroup keeps the minimum, 24); the kernel-wide cap the compiler
# redistributes among its three warpgroups, (4 + 4 + 4 warps) x 32 x 168 <= 64K. Measured on an
# H200 at BERT b64: 3 stages 15.8 us, 4 stages 16.2-16.4 (232 or 224 registers).
GLUON_STAGES = 3
GLUON_CONSUMER_REGISTERS = 232
GLUON_MAX_REGISTERS = 168


def _block(n: int) -> int:
    """A tile extent for `n` keys or head-dim elements: a power of two, at least tl.dot's 16."""
    return max(16, next_power_of_2(n))


def _supports(node: Node, floats: tuple[DType, ...] = HALF_FLOATS) -> Optional[str]:
    reason = triton_missing() or dtype_reason(node, floats) or _same_batch(node) or _mask_reason(node)
    if reason:
        return reason
    dims = [input_shape(node, i)[-1] for i in range(3)]
    if not all(isinstance(d, int) for d in dims):
        return "head dims unknown before run time"
    if dims[0] != dims[1]:
        return f"Q and K head dims differ ({dims[0]}, {dims[1]})"
    if max(dims) > MAX_HEAD_DIM:
        return f"head dim {max(dims)} (the kernel holds up to {MAX_HEAD_DIM} in registers)"
    if input_dtype(node, 0) == DType.FLOAT32 and max(dims) > MAX_FP32_HEAD_DIM:
        return f"head dim {max(dims)} in float32 (the kernel holds up to {MAX_FP32_HEAD_DIM} float32 in registers)"
    return None


def _supports_float32_too(node: Node) -> Optional[str]:
    return _supports(node, FAST_FLOATS)


def _in_order_of(like: torch.Tensor, shape: tuple[int, ...], output: OutputFn) -> torch.Tensor:
    """A 4-D tensor of `shape` laid out in `like`'s memory order (last dim innermost), a view of the
    row-major buffer `output` gives: [B, H, S, D] views of a [B, S, H, D] buffer get a [B, S, H, D]
    buffer too."""
    order = sorted(range(3), key=lambda d: (-like.stride(d) if like.shape[d] > 1 else 0, d)) + [3]
    buffer = output([shape[d] for d in order], like.dtype)
    inverse = [order.index(d) for d in range(4)]
    return buffer.permute(inverse)


def _output_and_mask(q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor, mask: Optional[torch.Tensor],
                     rank: int, output: OutputFn) -> tuple[torch.Tensor, Optional[torch.Tensor], tuple[int, ...]]:
    """The output in Q's memory order (in the buffer `output` gives), and the mask (of `rank`-D
    attention) broadcast to the 4-D scores with its strides (zeros where there is none): a broadcast
    dim has stride 0."""
    batch, heads, s_q = q4.shape[:3]
    out = _in_order_of(q4, (batch, heads, s_q, v4.shape[3]), output)
    if mask is None:
        return out, None, (0, 0, 0, 0)
    mask = _mask_4d(mask, rank).expand(batch, heads, s_q, k4.shape[2])
    return out, mask, tuple(mask.stride())


class TritonAttention:
    def __init__(self, tile: str) -> None:
        self.tile = TILES[tile]
        self._kernel: Any = None

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        if self._kernel is None:
            from .attention_kernels import attention_kernel
            self._kernel = attention_kernel
        q4, k4, v4, mask, out_shape = _fused_operands(inputs)
        batch, heads, s_q, d_qk = q4.shape
        s_k, d_v = k4.shape[2], v4.shape[3]
        out, mask, mask_strides = _output_and_mask(q4, k4, v4, mask, inputs[0].dim(), first_output(ctx))
        block_m, block_n, warps, stages = self.tile
        if out.numel() and s_k == 0:
            out.zero_()  # softmax over no keys: an empty sum (torch's kernels give zeros too)
        elif out.numel():
            grid = ((s_q + block_m - 1) // block_m, batch * heads)
            self._kernel[grid](
                q4, k4, v4, mask if mask is not None else q4, out, heads, s_q, s_k, d_qk, d_v,
                float(attrs["scale"]), *q4.stride(), *k4.stride(), *v4.stride(), *mask_strides, *out.stride(),
                HAS_MASK=mask is not None, MASK_ONE_ROW=mask_strides[2] == 0 or s_q == 1, EVEN_N=s_k % block_n == 0,
                BLOCK_M=block_m, BLOCK_N=block_n,
                BLOCK_DK=_block(d_qk), BLOCK_DV=_block(d_v),
                FP32_PRODUCTS="tf32" if q4.dtype == torch.float32 and tf32_allowed() else "ieee",
                num_warps=warps, num_stages=stages)
        return out if out.dim() == len(out_shape) else out.reshape(out_shape)


def _tma_strides(t: torch.Tensor) -> list[int]:
    """`t`'s strides for a TMA descriptor, which takes only 16-byte multiples for the outer dims.
    `t` comes through `aligned_rows`, so only a size-1 dim's stride (never stepped along, so
    free) may be off: it gets the extent of the dims inside it, rounded up to 16 bytes."""
    per_16_bytes = max(1, 16 // t.element_size())
    strides = list(t.stride())
    for d in range(t.dim() - 1):
        if t.shape[d] == 1:
            inner = max(strides[j] * t.shape[j] for j in range(d + 1, t.dim()))
            strides[d] = -(-max(inner, 1) // per_16_bytes) * per_16_bytes
    return strides


class TmaAttention:
    """The persistent Hopper (sm90+) kernel for short sequences: all keys in one block, Q/K/V
    tiles by TMA, two programs per multiprocessor walking the (batch, head, query block) tiles."""

    def __init__(self, tile: str) -> None:
        self.block_m, self.warps, self.stages, self.max_keys, self.max_head_dim = TMA_TILES[tile]
        self._kernel: Any = None
        self._descriptor: Any = None
        self._longer = TritonAttention("m64")

    def supports(self, node: Node) -> Optional[str]:
        reason = _supports(node)
        if reason:
            return reason
        if torch.cuda.is_available() and torch.cuda.get_device_capability() < (9, 0):
            return "TMA needs a Hopper (sm90) or newer GPU"
        dims = [input_shape(node, i)[-1] for i in range(3)]
        if any(d % 8 for d in dims):
            return f"head dims {dims} (TMA rows must be 16-byte multiples: multiples of 8)"
        if max(dims) > self.max_head_dim:
            return f"head dim {max(dims)} (this tile holds up to {self.max_head_dim} in registers)"
        keys = input_shape(node, 1)[-2]
        if isinstance(keys, int) and keys > self.max_keys:
            return f"{keys} keys (this tile takes up to {self.max_keys} in one block)"
        # A key count known only at run time (a dynamic sequence) is checked per call: longer
        # sequences go to the m64 kernel (see run). Shared memory is sized for the most keys.
        keys_text = f"{keys} keys" if isinstance(keys, int) else f"up to {self.max_keys} keys (a run-time count)"
        keys = keys if isinstance(keys, int) else self.max_keys
        block_n, (block_dk, _, block_dv) = _block(keys), [_block(d) for d in dims]
        needed = self._shared_bytes(block_n, block_dk, block_dv)
        if needed > shared_memory_per_block():
            return (f"{keys_text} of head dims {dims} need {needed // 1024} KiB of shared memory "
                    f"(the GPU gives a block {shared_memory_per_block() // 1024} KiB)")
        return None

    def _shared_bytes(self, block_n: int, block_dk: int, block_dv: int) -> int:
        # Each pipeline stage holds a Q tile and all keys' K and V rows (2-byte floats).
        return self.stages * 2 * (self.block_m * block_dk + block_n * (block_dk + block_dv))

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        q4, k4, v4, mask, out_shape = _fused_operands(inputs)
        s_q, s_k = q4.shape[2], k4.shape[2]
        if s_k > self.max_keys:
            # Shapes that were symbolic at build time came out longer than one block.
            return self._longer.run(ctx, inputs, attrs)
        out, mask, mask_strides = _output_and_mask(q4, k4, v4, mask, inputs[0].dim(), first_output(ctx))
        if out.data_ptr() % 16:
            # TMA stores need a 16-byte aligned base, which the arena's places lack only in caller-given memory
            # at such an address: this call then takes a tensor of its own.
            out = _in_order_of(q4, tuple(out.shape), fresh_output(q4.device))
        if out.numel() and s_k == 0:
            out.zero_()  # softmax over no keys: an empty sum (torch's kernels give zeros too)
            return out if out.dim() == len(out_shape) else out.reshape(out_shape)
        if out.numel():
            m_blocks = (s_q + self.block_m - 1) // self.block_m
            self._launch(q4, k4, v4, mask, mask_strides, out, m_blocks, float(attrs["scale"]) * _LOG2_E)
        return out if out.dim() == len(out_shape) else out.reshape(out_shape)

    def _launch(self, q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor, mask: Optional[torch.Tensor],
                mask_strides: tuple[int, ...], out: torch.Tensor, m_blocks: int, qk_scale: float) -> None:
        if self._kernel is None:
            from triton.tools.tensor_descriptor import TensorDescriptor

            from .attention_kernels import attention_tma_kernel
            self._kernel, self._descriptor = attention_tma_kernel, TensorDescriptor
        batch, heads, s_q, _ = q4.shape
        (block_n, block_dk, block_dv), (q, k, v, o) = self._descriptors(q4, k4, v4, out)
        tiles = m_blocks * batch * heads
        programs = min(tiles, _TMA_PROGRAMS_PER_SM * multiprocessor_count(q4.device))
        s_k = k4.shape[2]
        self._kernel[(programs,)](
            q, k, v, mask if mask is not None else q4, o, heads, s_q, s_k, m_blocks, tiles, qk_scale, *mask_strides,
            HAS_MASK=mask is not None, MASK_ONE_ROW=_one_row(mask_strides, s_q), EVEN_N=s_k == block_n,
            BLOCK_M=self.block_m, BLOCK_N=block_n, BLOCK_DK=block_dk, BLOCK_DV=block_dv, STAGES=self.stages,
            num_warps=self.warps)

    def _descriptors(self, q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor, out: torch.Tensor
                     ) -> tuple[tuple[int, int, int], tuple[Any, Any, Any, Any]]:
        """The tile extents (keys, Q/K head dim, V head dim) and the TMA descriptors of Q, K, V and the
        output: query blocks of block_m rows, all keys in one block."""
        block_n, block_dk, block_dv = _block(k4.shape[2]), _block(q4.shape[3]), _block(v4.shape[3])
        return (block_n, block_dk, block_dv), (
            self._describe(q4, [1, 1, self.block_m, block_dk]), self._describe(k4, [1, 1, block_n, block_dk]),
            self._describe(v4, [1, 1, block_n, block_dv]), self._describe(out, [1, 1, self.block_m, block_dv]))

    def _describe(self, t: torch.Tensor, block: list[int]) -> Any:
        return self._descriptor(t, list(t.shape), _tma_strides(t), block)


def _one_row(mask_strides: tuple[int, ...], s_q: int) -> bool:
    """Whether the mask is one row of keys for every query (a padding mask broadcast over the rows)."""
    return mask_strides[2] == 0 or s_q == 1


def gluon_hopper_missing() -> Optional[str]:
    """Why triton's Gluon dialect for Hopper cannot be used here, looked up without importing it."""
    reason = triton_missing()
    if reason:
        return reason
    try:
        found = importlib.util.find_spec("triton.experimental.gluon.language.nvidia.hopper") is not None
    except ModuleNotFoundError:
        found = False
    return None if found else "this triton has no Gluon dialect for Hopper (triton >= 3.5 has it)"


@functools.lru_cache(maxsize=None)
def _gluon_descriptor_api() -> tuple[Any, Any, dict[torch.dtype, Any]]:
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    return TensorDescriptor, gl.NVMMASharedLayout.get_default_for, {torch.float16: gl.float16,
                                                                    torch.bfloat16: gl.bfloat16}


def gluon_descriptor(t: torch.Tensor, block: list[int], strides: Optional[list[int]] = None) -> Any:
    """A TMA descriptor of `t` (fp16/bf16) for a Gluon kernel: boxes of `block` in the default NVMMA shared
    layout the warpgroup MMA reads. `strides`: t's own where not given. Imports Gluon at the first call."""
    make, shared_layout, dtypes = _gluon_descriptor_api()
    return make(t, list(t.shape), list(t.stride()) if strides is None else strides, block,
                shared_layout(block, dtypes[t.dtype]))


class GluonAttention(TmaAttention):
    """The persistent kernel, warp-specialised in Gluon (attention_gluon_kernels.py): a loader warp
    keeps a ring of Q/K/V stages full for two consumer warpgroups. Hopper only: it runs on
    warpgroup MMA instructions, which sm100 and later replaced. Masks with a row per query go to
    the Triton kernel, whose registers hold them."""

    def __init__(self, tile: str) -> None:
        super().__init__(tile)
        self.stages = GLUON_STAGES
        self._rows = TmaAttention(tile)

    def supports(self, node: Node) -> Optional[str]:
        reason = gluon_hopper_missing() or super().supports(node)
        if reason:
            return reason
        if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] != 9:
            return "warpgroup MMA needs a Hopper (sm90) GPU"
        return None

    def _shared_bytes(self, block_n: int, block_dk: int, block_dv: int) -> int:
        return super()._shared_bytes(block_n, block_dk, block_dv) + 2 * 2 * self.block_m * block_dv  # 2 output tiles

    def _launch(self, q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor, mask: Optional[torch.Tensor],
                mask_strides: tuple[int, ...], out: torch.Tensor, m_blocks: int, qk_scale: float) -> None:
        if mask is not None and not _one_row(mask_strides, q4.shape[2]):
            self._rows._launch(q4, k4, v4, mask, mask_strides, out, m_blocks, qk_scale)
            return
        if self._kernel is None:
            from .attention_gluon_kernels import attention_gluon_kernel
            self._kernel = attention_gluon_kernel
        batch, heads = q4.shape[:2]
        (block_n, _, _), (q, k, v, o) = self._descriptors(q4, k4, v4, out)
        tiles = m_blocks * batch * heads
        s_k = k4.shape[2]
        self._kernel[(min(tiles, multiprocessor_count(q4.device)),)](
            q, k, v, o, mask if mask is not None else q4, heads, s_k, m_blocks, tiles, qk_scale, mask_strides[0],
            mask_strides[1], mask_strides[3], HAS_MASK=mask is not None, EVEN_N=s_k == block_n, NUM_BUF=self.stages,
            CONSUMER_REGS=GLUON_CONSUMER_REGISTERS, num_warps=4, maxnreg=GLUON_MAX_REGISTERS)

    def _describe(self, t: torch.Tensor, block: list[int]) -> Any:
        return gluon_descriptor(t, block, _tma_strides(t))


_LOG2_E = 1.4426950408889634


def _register() -> None:
    for tile in TILES:
        impl = TritonAttention(tile)
        register(f"triton_{tile}", "ScaledDotProductAttention", impl.run, _supports_float32_too, domain="tensorkiln",
                 source="triton", arena_outputs=True)
    for tile in TMA_TILES:
        tma = TmaAttention(tile)
        register(f"triton_{tile}", "ScaledDotProductAttention", tma.run, tma.supports, domain="tensorkiln",
                 source="triton", arena_outputs=True)
    gluon = GluonAttention("tma_m128")
    register("gluon_tma_m128", "ScaledDotProductAttention", gluon.run, gluon.supports, domain="tensorkiln",
             source="triton", arena_outputs=True)


_register()

__all__ = ["GluonAttention", "TILES", "TMA_TILES", "TmaAttention", "TritonAttention", "gluon_descriptor",
           "gluon_hopper_missing"]
