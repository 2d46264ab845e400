"""Attention (opset 23+): scaled dot-product attention with masks, KV cache, GQA and softcap.

Y = softmax(softcap(Q·sqrt(scale) @ (K·sqrt(scale))ᵀ) + bias) @ V, where the additive bias
combines a boolean or float `attn_mask`, the bottom-right-aligned causal mask, the
sliding window (opset 25) and the `nonpad_kv_seqlen` padding mask. A query row that
no key may attend gives zeros, never NaN.

3-D inputs are (batch, seq, heads·head_size) and are split into heads with
`q_num_heads`/`kv_num_heads`; 4-D inputs are (batch, heads, seq, head_size).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

from ..ir import DType, Node, TensorType
from ..ir.shape import Dim
from .registry import InferContext, Op, register

Tensor = torch.Tensor

# qk_matmul_output_mode values.
_QK_RAW, _QK_SOFTCAPPED, _QK_WITH_BIAS, _QK_SOFTMAX = 0, 1, 2, 3
_SOFTMAX_PRECISIONS = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)


def _add_dims(a: Dim, b: Dim) -> Dim:
    return a + b if isinstance(a, int) and isinstance(b, int) else None


def _div_dim(a: Dim, b: int) -> Dim:
    return a // b if isinstance(a, int) and b else None


def _mul_dim(a: Dim, b: int) -> Dim:
    return a * b if isinstance(a, int) else None


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(batch, seq, heads·size) -> (batch, heads, seq, size)."""
    batch, seq, hidden = x.shape
    return x.reshape(batch, seq, num_heads, hidden // num_heads).transpose(1, 2)


def _bias_from_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.where(mask, torch.zeros((), dtype=dtype, device=mask.device),
                           torch.full((), float("-inf"), dtype=dtype, device=mask.device))
    return mask.to(dtype)


def _position_delta(q_len: int, kv_len: int, offset: Union[int, Tensor], device: torch.device) -> Tensor:
    """(i + offset) - j for query i and key j: (q, kv), or (batch, 1, q, kv) for per-batch offsets."""
    i = torch.arange(q_len, device=device).reshape(q_len, 1)
    j = torch.arange(kv_len, device=device).reshape(1, kv_len)
    if isinstance(offset, Tensor):
        return (i + offset.reshape(-1, 1, 1, 1).to(torch.int64)) - j
    return (i + offset) - j


def _allowed_to_bias(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.where(allowed, torch.zeros((), dtype=dtype, device=allowed.device),
                       torch.full((), float("-inf"), dtype=dtype, device=allowed.device))


def _safe_softmax(x: Tensor) -> Tensor:
    """Softmax over the last axis that gives zeros (not NaN) for rows that are all -inf."""
    row_max = x.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isneginf(row_max), torch.zeros_like(row_max), row_max)
    e = torch.exp(x - row_max)
    total = e.sum(dim=-1, keepdim=True)
    total = torch.where(total == 0, torch.ones_like(total), total)
    return e / total


def attention_bias(q_len: int, kv_len: int, dtype: torch.dtype, device: torch.device, mask: Optional[Tensor],
                   is_causal: bool, offset: Union[int, Tensor], left_window: int, right_window: int,
                   nonpad_kv_seqlen: Optional[Tensor]) -> Tensor:
    """The additive bias (broadcastable to (batch, heads, q, kv)) all masks combine into."""
    zeros = torch.zeros((q_len, kv_len), dtype=dtype, device=device)
    if mask is not None and mask.shape[-1] < kv_len:
        # A mask shorter than the keys leaves the remaining keys masked out.
        pad = kv_len - mask.shape[-1]
        fill = False if mask.dtype == torch.bool else float("-inf")
        mask = torch.nn.functional.pad(mask, (0, pad), value=fill)
    bias = zeros if mask is None else zeros + _bias_from_mask(mask, dtype)
    if is_causal:
        bias = bias + _allowed_to_bias(_position_delta(q_len, kv_len, offset, device) >= 0, dtype)
    if left_window >= 0 or right_window >= 0:
        delta = _position_delta(q_len, kv_len, offset, device)
        allowed = torch.ones_like(delta, dtype=torch.bool)
        if left_window >= 0:
            allowed &= delta <= left_window
        if right_window >= 0:
            allowed &= -delta <= right_window
        bias = bias + _allowed_to_bias(allowed, dtype)
    if nonpad_kv_seqlen is not None:
        keys = torch.arange(kv_len, device=device).reshape(1, kv_len)
        valid = keys < nonpad_kv_seqlen.reshape(-1, 1).to(torch.int64)
        bias = bias + _allowed_to_bias(valid, dtype).reshape(-1, 1, 1, kv_len)
    return bias


@register
class Attention(Op):
    name = "Attention"
    since_opset = 23
    attrs = {"is_causal": 0, "kv_num_heads": 0, "q_num_heads": 0, "qk_matmul_output_mode": 0, "scale": None,
             "softcap": 0.0, "softmax_precision": 0, "left_window_size": -1, "right_window_size": -1}

    def check(self, node: Node) -> Optional[str]:
        a = node.attrs
        if a["qk_matmul_output_mode"] not in (0, 1, 2, 3):
            return f"qk_matmul_output_mode {a['qk_matmul_output_mode']} is not one of 0, 1, 2, 3"
        if a["softmax_precision"] and DType(a["softmax_precision"]) not in _SOFTMAX_PRECISIONS:
            return f"softmax_precision {DType(a['softmax_precision']).short} is not a float type"
        if a["left_window_size"] < -1 or a["right_window_size"] < -1:
            return "left_window_size and right_window_size must be -1 or nonnegative"
        q = node.inputs[0].type
        if q is not None and q.shape is not None:
            if len(q.shape) not in (3, 4):
                return f"Q must be 3-D or 4-D, got rank {len(q.shape)}"
            if len(q.shape) == 3 and (a["q_num_heads"] <= 0 or a["kv_num_heads"] <= 0):
                return "3-D inputs need the q_num_heads and kv_num_heads attributes"
        has = [i < len(node.inputs) and node.inputs[i] is not None for i in range(7)]
        if has[4] != has[5]:
            return "past_key and past_value must be given together"
        if has[6] and has[4]:
            return "nonpad_kv_seqlen cannot be combined with past_key/past_value"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        q, k, v = ctx.type(0), ctx.type(1), ctx.type(2)
        if q is None or k is None or v is None or q.shape is None or k.shape is None or v.shape is None:
            return [None] * ctx.num_outputs
        a = ctx.attrs
        if len(q.shape) == 3:
            hq, hkv = a["q_num_heads"], a["kv_num_heads"]
            batch, q_len, kv_len = q.shape[0], q.shape[1], k.shape[1]
            k_size, v_size = _div_dim(k.shape[2], hkv), _div_dim(v.shape[2], hkv)
            y = TensorType(q.dtype, (batch, q_len, _mul_dim(v_size, hq)))
        else:
            batch, hq, q_len = q.shape[0], q.shape[1], q.shape[2]
            hkv, kv_len, k_size, v_size = k.shape[1], k.shape[2], k.shape[3], v.shape[3]
            y = TensorType(q.dtype, (batch, hq, q_len, v_size))
        past = ctx.shape(4) if ctx.has_input(4) else None
        total = kv_len if not ctx.has_input(4) else (None if past is None else _add_dims(past[2], kv_len))
        present_k = TensorType(k.dtype, (batch, hkv, total, k_size))
        present_v = TensorType(v.dtype, (batch, hkv, total, v_size))
        qk = TensorType(q.dtype, (batch, hq, q_len, total))
        return [y, present_k, present_v, qk][:ctx.num_outputs]

    def reference(self, ctx, inputs, attrs):
        inputs = list(inputs) + [None] * (7 - len(inputs))
        q, k, v, mask, past_key, past_value, nonpad = inputs[:7]
        a = attrs
        three_d = q.dim() == 3
        if three_d:
            q = _split_heads(q, a["q_num_heads"])
            k = _split_heads(k, a["kv_num_heads"])
            v = _split_heads(v, a["kv_num_heads"])
        dtype = q.dtype
        scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q.shape[3])
        # Both Q and K are scaled by sqrt(scale), rounded to the input type, as ONNX specifies. A
        # Python number, not a device tensor: that would be copied from the host at every call,
        # which a CUDA-graph capture does not allow.
        root = float(torch.tensor(math.sqrt(scale), dtype=dtype))

        present_key = k if past_key is None else torch.cat([past_key, k], dim=2)
        present_value = v if past_value is None else torch.cat([past_value, v], dim=2)
        q_len, kv_len = q.shape[2], present_key.shape[2]
        if past_key is not None:
            offset: Union[int, Tensor] = past_key.shape[2]
        elif nonpad is not None:
            offset = nonpad.reshape(-1).to(torch.int64) - q_len
        else:
            offset = 0
        bias = attention_bias(q_len, kv_len, dtype, q.device, mask, bool(a["is_causal"]), offset,
                              a["left_window_size"], a["right_window_size"], nonpad)

        k_all, v_all = present_key, present_value
        q_heads, kv_heads = q.shape[1], k_all.shape[1]
        if q_heads != kv_heads:
            if q_heads % kv_heads:
                raise ValueError(f"q heads ({q_heads}) must be a multiple of kv heads ({kv_heads})")
            # Grouped-query attention: each KV head serves q_heads/kv_heads consecutive query heads.
            k_all = k_all.repeat_interleave(q_heads // kv_heads, dim=1)
            v_all = v_all.repeat_interleave(q_heads // kv_heads, dim=1)

        qk = torch.matmul(q * root, (k_all * root).transpose(-1, -2))
        if a["softcap"] > 0:
            qk = torch.tanh(qk / a["softcap"]) * a["softcap"]
        scores = qk + bias
        mode = a["qk_matmul_output_mode"]
        qk_out = scores if mode == _QK_WITH_BIAS else qk

        if a["softmax_precision"]:
            softmax_dtype = DType(a["softmax_precision"]).torch
        else:
            # ONNX: without softmax_precision the softmax runs in the input's precision
            # (the fp16 conformance data depends on it).
            softmax_dtype = dtype
        probs = _safe_softmax(scores.to(softmax_dtype))
        # Rows whose bias masks every key give zeros (decided on the bias, not the scores,
        # which may be NaN when an infinite score meets a -inf bias).
        fully_masked = torch.isneginf(bias.amax(dim=-1, keepdim=True))
        probs = torch.where(fully_masked, torch.zeros((), dtype=probs.dtype, device=probs.device), probs)
        if mode == _QK_SOFTMAX:
            qk_out = probs
        probs = probs.to(dtype)
        y = torch.matmul(probs, v_all.to(dtype))
        if three_d:
            y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
        return y, present_key, present_value, qk_out.to(dtype)
