"""Tactic "gluon_qkv_m128" for tensorkiln::ProjectedAttention: the projection and the attention in one kernel.

The warp-specialised Gluon kernel (projected_attention_kernels.py) takes one 128-token sequence and
one head per tile, so it runs where the sequence is exactly 128 tokens, the head dim 64 and the
embedding a multiple of 64, in fp16 or bf16, on a Hopper GPU (warpgroup MMA), with a mask that is one
row of keys per sequence (a padding mask) or none. `fused_kernel_reason` is what the builder asks
before it fuses a layer (passes/projected_attention.py): elsewhere the projection and the attention
stay two layers with their own tactics, as they do where the tiles would not fill the GPU (`fusion_reason`).

A call whose shapes the kernel does not take (an engine with a dynamic sequence length, at another
length than 128) computes the layer as the op's reference does: cuBLAS's product, then torch's
attention.

The kernel reads the layer's weight as it is stored (per-head row blocks [q_h; k_h; v_h], K-major:
ops/projected_attention.py), by TMA.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from ...ir import Node
from ...ops import get_op
from ...ops.projected_attention import head_dim
from ..derived import DerivedTensors
from ._common import (HALF_FLOATS, input_shape, inputs_dtype_reason, multiprocessor_count, optional_input, register,
                      shared_memory_per_block)
from .triton_attention import gluon_descriptor, gluon_hopper_missing

SEQUENCE = 128  # tokens per tile: one whole sequence, all keys in one block
HEAD_DIM = 64
K_STEP = 64  # embedding columns per ring stage
# Ring stages of (x, W_qk, W_v) k-steps; registers per consumer thread; the kernel-wide cap the compiler
# redistributes among its three warpgroups ((4 + 4 + 4 warps) x 32 x 168 <= 64K). H200, BERT-base b64:
# 4 stages 46.9 us per layer, 3 stages 51.5, 2 stages 78.6.
STAGES = 4
CONSUMER_REGISTERS = 232
MAX_REGISTERS = 168
_LOG2_E = 1.4426950408889634


def _shared_bytes() -> int:
    stage = 2 * (SEQUENCE * K_STEP + 2 * HEAD_DIM * K_STEP + HEAD_DIM * K_STEP)
    return STAGES * stage + 4 * 2 * SEQUENCE * HEAD_DIM + 1024  # + each consumer's k and v tiles, the barriers


def _mask_reason(node: Node) -> Optional[str]:
    mask = optional_input(node.inputs, 3)
    if mask is None or mask.shape is None:
        return None if mask is None else "the mask's shape is unknown"
    shape = [1] * (4 - len(mask.shape)) + list(mask.shape)
    if len(shape) != 4 or shape[1] != 1 or shape[2] != 1:
        return f"a mask of shape {list(mask.shape)} (the kernel takes one row of keys per sequence)"
    return None


def fused_kernel_reason(node: Node) -> Optional[str]:
    """Why the fused kernel cannot compute this ProjectedAttention layer (None: it can)."""
    reason = gluon_hopper_missing() or inputs_dtype_reason(node, HALF_FLOATS)
    if reason:
        return reason
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] != 9:
        return "warpgroup MMA needs a Hopper (sm90) GPU"
    x, w = input_shape(node, 0), input_shape(node, 1)
    if x is None or w is None or len(x) != 3 or not isinstance(x[2], int) or not isinstance(w[0], int):
        return "the embedding and W's rows must be known at build time"
    heads = int(node.attrs["heads"])
    d = head_dim(w[0], heads)
    if d != HEAD_DIM:
        return f"head dim {d} (the kernel's tile is {HEAD_DIM})"
    if x[2] % K_STEP:
        return f"an embedding of {x[2]} (the kernel steps through it {K_STEP} columns at a time)"
    if isinstance(x[1], int) and x[1] != SEQUENCE:
        return f"sequences of {x[1]} tokens (a tile is one sequence of {SEQUENCE})"
    if _shared_bytes() > shared_memory_per_block():
        return (f"the kernel needs {_shared_bytes() // 1024} KiB of shared memory "
                f"(the GPU gives a block {shared_memory_per_block() // 1024} KiB)")
    return _mask_reason(node)


def fusion_reason(node: Node, opt_dims: Mapping[str, int]) -> Optional[str]:
    """Why the builder should not fuse this layer (None: fuse it): the kernel cannot take it, or at the
    batch the engine is tuned for (`opt_dims`: symbolic dim -> its size there) its tiles, one per sequence
    and head, would leave multiprocessors idle, where the unfused product spreads over all of them
    (BERT-base at batch 1 on an H200, fused: 0.450 ms latency, against 0.39-0.40 unfused)."""
    reason = fused_kernel_reason(node)
    if reason:
        return reason
    batch = input_shape(node, 0)[0]
    if isinstance(batch, str):
        if batch not in opt_dims:
            return f"the batch dim '{batch}' has no size to tune at"
        batch = opt_dims[batch]
    heads = int(node.attrs["heads"])
    processors = multiprocessor_count(torch.device("cuda"))
    if batch * heads < processors:
        return (f"{batch * heads} tiles (batch {batch} x {heads} heads) for {processors} multiprocessors: "
                "the unfused layers fill the GPU better")
    return None


class GluonProjectedAttention:
    def __init__(self) -> None:
        self._kernel: Any = None
        self.weights = DerivedTensors()
        self._reference = get_op("ProjectedAttention", "tensorkiln").reference

    def supports(self, node: Node) -> Optional[str]:
        return fused_kernel_reason(node)

    def _mask_row(self, mask: Optional[torch.Tensor], batch: int) -> Optional[tuple[torch.Tensor, int]]:
        """The mask as one row of keys per sequence and its stride between sequences; None when it is not one."""
        m4 = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
        if m4.shape[1] != 1 or m4.shape[2] != 1 or m4.shape[3] != SEQUENCE or m4.shape[0] not in (1, batch):
            return None
        if m4.stride(3) != 1:
            m4 = m4.contiguous()
        return m4, (m4.stride(0) if m4.shape[0] > 1 else 0)

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        x, w = inputs[0], inputs[1]
        bias, mask = optional_input(inputs, 2), optional_input(inputs, 3)
        batch, seq, embed = x.shape
        heads = int(attrs["heads"])
        row = None if mask is None else self._mask_row(mask, batch)
        if seq != SEQUENCE or (mask is not None and row is None) or not batch:
            return self._reference(ctx, inputs, attrs)
        x2 = x.reshape(batch * seq, embed)
        if not x2.is_contiguous() or x2.data_ptr() % 16:
            x2 = x2.contiguous()
        wt = w if w.is_contiguous() else self.weights.get(w, "contiguous", lambda t: t.contiguous())
        if bias is None:
            bias = self.weights.get(w, "no_bias", lambda t: torch.zeros(t.shape[0], dtype=t.dtype, device=t.device))
        out = ctx.output(0, (batch, seq, heads, HEAD_DIM), x.dtype)
        if out.data_ptr() % 16:
            out = torch.empty((batch, seq, heads, HEAD_DIM), dtype=x.dtype, device=x.device)
        self._launch(x2, wt, bias, row, out.view(batch * seq, heads * HEAD_DIM), heads, float(attrs["scale"]))
        return out.permute(0, 2, 1, 3)

    def _launch(self, x2: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor,
                row: Optional[tuple[torch.Tensor, int]], out2: torch.Tensor, heads: int, scale: float) -> None:
        if self._kernel is None:
            from .projected_attention_kernels import qkv_attention_kernel
            self._kernel = qkv_attention_kernel
        tiles = (x2.shape[0] // SEQUENCE) * heads
        mask, mask_stride = row if row is not None else (x2, 0)
        self._kernel[(min(tiles, multiprocessor_count(x2.device)),)](
            gluon_descriptor(x2, [SEQUENCE, K_STEP]), gluon_descriptor(wt, [2 * HEAD_DIM, K_STEP]),
            gluon_descriptor(wt, [HEAD_DIM, K_STEP]), gluon_descriptor(out2, [SEQUENCE, HEAD_DIM]), bias, mask,
            mask_stride, heads, tiles, x2.shape[1], scale * _LOG2_E, HAS_MASK=row is not None, STAGES=STAGES,
            CONSUMER_REGS=CONSUMER_REGISTERS, num_warps=4, maxnreg=MAX_REGISTERS)


def _register() -> None:
    fused = GluonProjectedAttention()
    register("gluon_qkv_m128", "ProjectedAttention", fused.run, fused.supports, domain="tensorkiln", source="triton",
             arena_outputs=True)


_register()

__all__ = ["GluonProjectedAttention", "fused_kernel_reason", "fusion_reason"]
