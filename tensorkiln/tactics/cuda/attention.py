"""Attention tactics for tensorkiln::ScaledDotProductAttention: "flash", "mem_efficient", "cudnn", "math".

The fused kernels are called through their aten operators directly: selecting them with
the `torch.nn.attention.sdpa_kernel` context manager on every call costs tens of
microseconds of flag juggling (measured ~24 us per enter/exit on the CPU), as much as the
kernel itself at batch 1. The operators want [B, H, S, D] tensors, so 2-D, 3-D and 5-D+
inputs are viewed as 4-D (the reference's F.scaled_dot_product_attention sends 3-D inputs
to the unfused math path).

- flash: FlashAttention-2; fp16/bf16, no mask, equal head dims, head dim a multiple of 8
  up to 256.
- mem_efficient: the memory-efficient (cutlass) kernel; fp32/fp16/bf16, takes an additive
  mask (broadcast, not materialised), head dims aligned to 16 bytes.
- cudnn: cuDNN's fused attention; fp16/bf16, takes a broadcast additive mask, head dims
  multiples of 8 up to 128; on Hopper it is the fastest of these where it applies
  (BERT-base, batch 64: 30 us per layer against mem_efficient's 54 us on an H200).
- math: the primitive chain with scale and mask fused into one batched GEMM (baddbmm) and a
  single-pass softmax that accumulates in fp32; any shape.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from ...ir import DType, Node
from ...ops.sdpa import aligned_rows
from ._common import FAST_FLOATS, HALF_FLOATS, dtype_reason, input_shape, optional_input, register

_MAX_FLASH_HEAD_DIM = 256


def _same_batch(node: Node) -> Optional[str]:
    q, k, v = (input_shape(node, i) for i in range(3))
    if q is None or k is None or v is None:
        return "Q/K/V ranks unknown before run time"
    if not (len(q) == len(k) == len(v)) or q[:-2] != k[:-2] or q[:-2] != v[:-2]:
        return f"batch dims of Q {list(q)}, K {list(k)}, V {list(v)} differ (they broadcast: math tactic)"
    return None


def _head_dims(node: Node) -> tuple[Any, Any, Any]:
    q, k, v = (input_shape(node, i) for i in range(3))
    return q[-1], k[-1], v[-1]


def _equal_head_dims_reason(node: Node, largest: int, kernel: str) -> Optional[str]:
    """Why Q/K/V's head dims do not suit a kernel that wants one head dim, a multiple of 8 up to `largest`."""
    dq, dk, dv = _head_dims(node)
    if not all(isinstance(d, int) for d in (dq, dk, dv)):
        return "head dims unknown before run time"
    if not dq == dk == dv:
        return f"head dims differ (Q {dq}, K {dk}, V {dv})"
    if dq % 8 or dq > largest:
        return f"head dim {dq} ({kernel} takes multiples of 8 up to {largest})"
    return None


def _mask_reason(node: Node) -> Optional[str]:
    """Why the mask does not broadcast into the [..., S, L] scores without widening them."""
    mask = input_shape(node, 3)
    if mask is None:
        return None if optional_input(node.inputs, 3) is None else "mask rank unknown before run time"
    q, k = input_shape(node, 0), input_shape(node, 1)
    scores = tuple(q[:-1]) + (k[-2],)
    if len(mask) > len(scores):
        return f"mask {list(mask)} has more dims than the scores {list(scores)}"
    for m, s in zip(reversed(mask), reversed(scores)):
        if m != 1 and m != s:
            return f"mask {list(mask)} does not broadcast into the scores {list(scores)} without widening them"
    if len(scores) > 4 and len(mask) > 2:
        return "a mask over more than the last two dims of 5-D+ attention"
    return None


def _as_4d(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 4:
        return t
    if t.dim() < 4:
        return t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))
    return t.reshape(-1, t.shape[-3], t.shape[-2], t.shape[-1])


def _mask_4d(mask: torch.Tensor, scores_rank: int) -> torch.Tensor:
    """The mask with the scores' rank, then viewed as the 4-D scores are."""
    mask = mask.reshape((1,) * (scores_rank - mask.dim()) + tuple(mask.shape))
    if scores_rank >= 4:
        # _mask_reason keeps 5-D+ masks to the last two dims: all leading dims are 1.
        return mask.reshape((1, 1) + tuple(mask.shape[-2:])) if scores_rank > 4 else mask
    return mask.reshape((1,) * (4 - scores_rank) + tuple(mask.shape))


def _aligned_bias(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The mask expanded to the scores' 4-D shape with the 16-element stride alignment the
    memory-efficient kernel needs (as torch's own preprocessing: pad the last dim, slice it back)."""
    last = mask.shape[-1]
    strides_ok = mask.stride(-1) == 1 or last == 1
    strides_ok = strides_ok and all(s % 16 == 0 for s, n in zip(mask.stride()[:-1], mask.shape[:-1]) if n > 1)
    if not strides_ok or last % 16:
        padded = F.pad(mask, (0, (-last) % 16))
        mask = padded[..., :last]
    return mask.expand(shape)


def _out_shape(q: torch.Tensor, v: torch.Tensor) -> tuple[int, ...]:
    return tuple(q.shape[:-1]) + (v.shape[-1],)


def _fused_operands(inputs: list[Optional[torch.Tensor]]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor], tuple[int, ...]]:
    """Q, K, V as the fused kernels take them (4-D, rows dense), the mask, and the output's shape."""
    q, k, v = inputs[0], inputs[1], inputs[2]
    # Unit stride along the head dim and 16-byte aligned rows, as the fused kernels need
    # (torch does not check a view's strides: ops/sdpa.py's aligned_rows).
    q4, k4, v4 = aligned_rows(_as_4d(q)), aligned_rows(_as_4d(k)), aligned_rows(_as_4d(v))
    return q4, k4, v4, optional_input(inputs, 3), _out_shape(q, v)


class Flash:
    def supports(self, node: Node) -> Optional[str]:
        if not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention"):
            return "this torch has no flash attention operator"
        reason = dtype_reason(node, HALF_FLOATS) or _same_batch(node)
        if reason:
            return reason
        if optional_input(node.inputs, 3) is not None:
            return "flash attention takes no additive mask"
        return _equal_head_dims_reason(node, _MAX_FLASH_HEAD_DIM, "flash")

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        q4, k4, v4, _, out_shape = _fused_operands(inputs)
        y = torch.ops.aten._scaled_dot_product_flash_attention(q4, k4, v4, 0.0, False, False,
                                                                scale=float(attrs["scale"]))[0]
        return y if y.dim() == len(out_shape) else y.reshape(out_shape)


class MemEfficient:
    def supports(self, node: Node) -> Optional[str]:
        if not hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention"):
            return "this torch has no memory-efficient attention operator"
        reason = dtype_reason(node, FAST_FLOATS) or _same_batch(node) or _mask_reason(node)
        if reason:
            return reason
        dq, dk, dv = _head_dims(node)
        if not all(isinstance(d, int) for d in (dq, dk, dv)):
            return "head dims unknown before run time"
        if dq != dk:
            return f"Q and K head dims differ ({dq}, {dk})"
        align = 4 if node.inputs[0].dtype == DType.FLOAT32 else 8
        if dq % align or dv % align:
            return f"head dims {dq}, {dv} are not multiples of {align} (16-byte aligned rows)"
        return None

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        q4, k4, v4, mask, out_shape = _fused_operands(inputs)
        bias = None
        if mask is not None:
            scores = (q4.shape[0], q4.shape[1], q4.shape[2], k4.shape[2])
            bias = _aligned_bias(_mask_4d(mask.to(q4.dtype), inputs[0].dim()), scores)
        y = torch.ops.aten._scaled_dot_product_efficient_attention(q4, k4, v4, bias, False,
                                                                    scale=float(attrs["scale"]))[0]
        return y if y.dim() == len(out_shape) else y.reshape(out_shape)


class Cudnn:
    """cuDNN's fused attention (flash-style, Hopper wgmma kernels on sm90): fp16/bf16, takes an
    additive mask that broadcasts over heads and query rows without materialising it, reads
    Q/K/V in any row-dense strides (the [B, S, H, D] views a head split leaves)."""

    def supports(self, node: Node) -> Optional[str]:
        if not hasattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention"):
            return "this torch has no cuDNN attention operator"
        reason = dtype_reason(node, HALF_FLOATS) or _same_batch(node) or _mask_reason(node)
        if reason:
            return reason
        q = input_shape(node, 0)
        if len(q) > 4:
            return "5-D+ attention (cuDNN's bias is 4-D)"
        return _equal_head_dims_reason(node, 128, "cuDNN")

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        q4, k4, v4, mask, out_shape = _fused_operands(inputs)
        bias = None
        if mask is not None:
            # torch expands a 4-D bias's batch, query and key dims itself (stride 0); heads stay as given.
            bias = _mask_4d(mask.to(q4.dtype), inputs[0].dim())
        y = torch.ops.aten._scaled_dot_product_cudnn_attention(q4, k4, v4, bias, False, 0.0, False, False,
                                                               scale=float(attrs["scale"]))[0]
        return y if y.dim() == len(out_shape) else y.reshape(out_shape)


class Math:
    def supports(self, node: Node) -> Optional[str]:
        return dtype_reason(node, FAST_FLOATS)

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        q, k, v = inputs[0], inputs[1], inputs[2]
        mask = optional_input(inputs, 3)
        scale = float(attrs["scale"])
        batch = q.shape[:-2]
        s, l = q.shape[-2], k.shape[-2]
        full = tuple(batch) + (s, l)
        mask_fits = mask is None or (mask.dim() <= len(full)
                                     and tuple(torch.broadcast_shapes(mask.shape, full)) == full)
        if k.shape[:-2] == batch and v.shape[:-2] == batch and q.dim() >= 3 and mask_fits:
            q3 = q.reshape(-1, s, q.shape[-1])
            k3 = k.reshape(-1, l, k.shape[-1])
            v3 = v.reshape(-1, l, v.shape[-1])
            m = None if mask is None else mask.to(q.dtype)
            if m is not None:
                m = m.reshape((1,) * (len(full) - m.dim()) + tuple(m.shape))
            if m is not None and all(d == 1 for d in m.shape[:-2]):
                # One mask for every batch entry: baddbmm broadcasts it, scale and mask in the GEMM.
                scores = torch.baddbmm(m.reshape(1, m.shape[-2], m.shape[-1]), q3, k3.transpose(1, 2), alpha=scale)
            elif m is not None and tuple(m.shape[:-2]) == tuple(batch):
                scores = torch.baddbmm(m.reshape(-1, m.shape[-2], m.shape[-1]), q3, k3.transpose(1, 2), alpha=scale)
            else:
                scores = torch.bmm(q3, k3.transpose(1, 2)).mul_(scale)
                if m is not None:
                    # A mask broadcast over some batch dims (BERT's [B, 1, 1, L]): added in place, never expanded.
                    scores.view(full).add_(m)
            y = ctx.output(0, tuple(batch) + (s, v.shape[-1]), scores.dtype)
            # torch's half softmax accumulates in fp32 and rounds once: the reference's fp32 softmax + cast.
            torch.bmm(torch.softmax(scores, dim=-1), v3, out=y.view(q3.shape[0], s, v.shape[-1]))
            return y
        # Batch dims that broadcast, or a mask that widens the scores: the chain as written (rare: torch.matmul
        # on N-D operands may copy into an out=, so its own result is the output).
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)
        if mask is not None:
            scores = scores + mask.to(q.dtype)
        return torch.matmul(torch.softmax(scores, dim=-1), v)


def _register() -> None:
    # The fused kernels' aten operators allocate their outputs (they have no out= form); "math" writes its last
    # product into the output it is given.
    for name, impl, source in (("flash", Flash(), "torch"), ("mem_efficient", MemEfficient(), "torch"),
                               ("cudnn", Cudnn(), "cudnn"), ("math", Math(), "torch")):
        register(name, "ScaledDotProductAttention", impl.run, impl.supports, domain="tensorkiln", source=source,
                 arena_outputs=name == "math", fresh_outputs=True)


_register()

__all__ = ["Cudnn", "Flash", "Math", "MemEfficient"]
