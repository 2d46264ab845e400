"""LinearAttention: recurrent linear attention (linear, gated, delta, gated-delta rules).

Per kv head a (d_k, d_v) state S is updated token by token:
  linear:      S = S + k ⊗ v
  gated:       S = exp(g) S + k ⊗ v
  delta:       S = S + k ⊗ β (v - Sᵀk)
  gated_delta: S = exp(g) S, then the delta update on the decayed S
and each query head reads o = scale · qᵀ S of its kv head (GQA when q heads > kv heads).
Inputs are packed (batch, T, heads·size); the state is (batch, kv_heads, d_k, d_v).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..ir import Node, TensorType
from ..ir.shape import Dim
from .registry import InferContext, Op, register

_RULES = ("linear", "gated", "delta", "gated_delta")


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(batch, T, heads·size) -> (batch, heads, T, size)."""
    b, t, hd = x.shape
    if hd % num_heads:
        raise ValueError(f"last dimension {hd} is not divisible by {num_heads} heads")
    return x.reshape(b, t, num_heads, hd // num_heads).transpose(1, 2)


def _div(a: Dim, b: int) -> Dim:
    return a // b if isinstance(a, int) and b else None


@register
class LinearAttention(Op):
    name = "LinearAttention"
    attrs = {"chunk_size": 64, "kv_num_heads": 0, "q_num_heads": 0, "scale": 0.0, "update_rule": "gated_delta"}

    def check(self, node: Node) -> Optional[str]:
        a = node.attrs
        rule = a["update_rule"]
        if rule not in _RULES:
            return f"update_rule '{rule}' is not one of {', '.join(_RULES)}"
        hq, hkv = a["q_num_heads"], a["kv_num_heads"]
        if hq <= 0 or hkv <= 0 or hq % hkv:
            return f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})"
        has = [i < len(node.inputs) and node.inputs[i] is not None for i in range(6)]
        gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
        if gated != has[4]:
            return f"update_rule '{rule}' {'requires' if gated else 'forbids'} the decay input"
        if delta != has[5]:
            return f"update_rule '{rule}' {'requires' if delta else 'forbids'} the beta input"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        q, k, v = ctx.type(0), ctx.shape(1), ctx.shape(2)
        if q is None or q.shape is None or k is None or v is None:
            return [None, None]
        hq, hkv = ctx.attrs["q_num_heads"], ctx.attrs["kv_num_heads"]
        d_k, d_v = _div(q.shape[2], hq), _div(v[2], hkv)
        out_v = d_v * hq if isinstance(d_v, int) else None
        state_dtype = ctx.dtype(3) if ctx.has_input(3) else q.dtype
        state = None if state_dtype is None else TensorType(state_dtype, (q.shape[0], hkv, d_k, d_v))
        return [TensorType(q.dtype, (q.shape[0], q.shape[1], out_v)), state]

    def reference(self, ctx, inputs, attrs):
        inputs = list(inputs) + [None] * (6 - len(inputs))
        query, key, value, past, decay, beta = inputs[:6]
        # The rule shows in which of decay and beta are given (check() holds them together).
        hq, hkv = attrs["q_num_heads"], attrs["kv_num_heads"]
        compute = torch.promote_types(query.dtype, torch.float32)
        b, t, _ = query.shape
        q, k, v = (_heads(x, h).to(compute) for x, h in ((query, hq), (key, hkv), (value, hkv)))
        d_k, d_v = q.shape[3], v.shape[3]
        if decay is not None:
            if decay.shape[-1] == hkv:
                decay = decay.reshape(b, t, hkv, 1).transpose(1, 2)
            elif decay.shape[-1] == hkv * d_k:
                decay = _heads(decay, hkv)
            else:
                raise ValueError(f"decay's last dimension {decay.shape[-1]} must be kv_num_heads ({hkv}) "
                                 f"or kv_num_heads*d_k ({hkv * d_k})")
            decay = decay.to(compute)
        if beta is not None:
            if beta.shape[-1] not in (hkv, 1):
                raise ValueError(f"beta's last dimension {beta.shape[-1]} must be kv_num_heads ({hkv}) or 1")
            beta = beta.reshape(b, t, beta.shape[-1], 1).transpose(1, 2).to(compute)
        if past is not None:
            if tuple(past.shape) != (b, hkv, d_k, d_v):
                raise ValueError(f"past_state shape {list(past.shape)} is not {[b, hkv, d_k, d_v]}")
            state_dtype, state = past.dtype, past.to(compute)
        else:
            state_dtype = query.dtype
            state = torch.zeros((b, hkv, d_k, d_v), dtype=compute, device=query.device)
        scale = attrs["scale"] or 1.0 / math.sqrt(d_k)
        group = hq // hkv
        outputs = []
        for i in range(t):
            k_t, v_t = k[:, :, i, :], v[:, :, i, :]
            if decay is not None:
                state = state * torch.exp(decay[:, :, i, :]).unsqueeze(-1)
            if beta is not None:
                retrieved = torch.einsum("bhdm,bhd->bhm", state, k_t)
                v_t = beta[:, :, i, :] * (v_t - retrieved)
            state = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
            read = state if group == 1 else state.repeat_interleave(group, dim=1)
            outputs.append(scale * torch.einsum("bhd,bhdm->bhm", q[:, :, i, :], read))
        out = torch.stack(outputs, dim=2) if outputs else torch.zeros((b, hq, 0, d_v), dtype=compute,
                                                                        device=query.device)
        out = out.transpose(1, 2).reshape(b, t, hq * d_v).to(query.dtype)
        return out, state.to(state_dtype)
