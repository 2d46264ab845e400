"""The recurrent layers RNN, GRU and LSTM: one family, since they differ only in the cell.

All three share the input layout (``layout`` 0: ``[seq, batch, input]``, 1: ``[batch, seq, input]``),
directions (forward, reverse, bidirectional), activation lists with their alpha/beta,
``clip`` on the pre-activations, per-batch ``sequence_lens`` and the Y / Y_h (/ Y_c) outputs.
The input projection ``X @ W^T + Wb`` is one matmul over all time steps; only the
recurrence runs step by step.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

import torch
import torch.nn.functional as F

from ..ir import Node, TensorType
from .registry import InferContext, Op, RunContext, Tensor, register

Activation = Callable[[Tensor], Tensor]

# name (lower case) -> (uses alpha, uses beta, default alpha, default beta)
_ACTIVATION_PARAMS: dict[str, tuple[bool, bool, float, float]] = {
    "relu": (False, False, 0.0, 0.0),
    "tanh": (False, False, 0.0, 0.0),
    "sigmoid": (False, False, 0.0, 0.0),
    "affine": (True, True, 1.0, 0.0),
    "leakyrelu": (True, False, 0.01, 0.0),
    "thresholdedrelu": (True, False, 1.0, 0.0),
    "scaledtanh": (True, True, 1.0, 1.0),
    "hardsigmoid": (True, True, 0.2, 0.5),
    "elu": (True, False, 1.0, 0.0),
    "softsign": (False, False, 0.0, 0.0),
    "softplus": (False, False, 0.0, 0.0),
}


def _activation(name: str, alpha: float, beta: float) -> Activation:
    if name == "relu":
        return torch.relu
    if name == "tanh":
        return torch.tanh
    if name == "sigmoid":
        return torch.sigmoid
    if name == "affine":
        return lambda x: x * alpha + beta
    if name == "leakyrelu":
        return lambda x: torch.where(x >= 0, x, x * alpha)
    if name == "thresholdedrelu":
        return lambda x: torch.where(x > alpha, x, torch.zeros_like(x))
    if name == "scaledtanh":
        return lambda x: torch.tanh(x * beta) * alpha
    if name == "hardsigmoid":
        return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)
    if name == "elu":
        return lambda x: torch.where(x >= 0, x, (torch.exp(x) - 1) * alpha)
    if name == "softsign":
        return lambda x: x / (1 + torch.abs(x))
    if name == "softplus":
        return F.softplus
    raise ValueError(f"unknown activation '{name}'")


class _Recurrent(Op):
    """What RNN, GRU and LSTM share; subclasses give the cell."""

    num_gates: ClassVar[int] = 1
    # Activations per direction, in the order the attribute lists them.
    default_activations: ClassVar[list[str]] = []
    num_outputs_max: ClassVar[int] = 2
    attrs = {"activation_alpha": None, "activation_beta": None, "activations": None, "clip": None,
             "direction": "forward", "hidden_size": None, "layout": 0}

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = super().normalize(attrs, opset)
        direction = out["direction"]
        if direction not in ("forward", "reverse", "bidirectional"):
            raise ValueError(f"direction must be forward, reverse or bidirectional, not '{direction}'")
        num_directions = 2 if direction == "bidirectional" else 1
        per_direction = len(self.default_activations)
        names = out["activations"]
        if names is None:
            names = self.default_activations * num_directions
        elif len(names) == per_direction and num_directions == 2:
            names = list(names) * 2  # one list given for both directions, as onnxruntime accepts
        if len(names) != per_direction * num_directions:
            raise ValueError(f"activations must list {per_direction * num_directions} functions "
                             f"({per_direction} per direction), got {len(names)}")
        # alpha/beta are consumed in order by the activations that take them (onnxruntime's reading).
        alphas = list(out["activation_alpha"] or [])
        betas = list(out["activation_beta"] or [])
        resolved = []
        for name in names:
            key = name.lower()
            if key not in _ACTIVATION_PARAMS:
                raise ValueError(f"unsupported activation '{name}'")
            uses_alpha, uses_beta, alpha, beta = _ACTIVATION_PARAMS[key]
            if uses_alpha and alphas:
                alpha = float(alphas.pop(0))
            if uses_beta and betas:
                beta = float(betas.pop(0))
            resolved.append([key, alpha, beta])
        out["activations"] = [r[0] for r in resolved]
        out["activation_alpha"] = [r[1] for r in resolved]
        out["activation_beta"] = [r[2] for r in resolved]
        if out["layout"] not in (0, 1):
            raise ValueError(f"layout must be 0 or 1, not {out['layout']}")
        return out

    def check(self, node: Node) -> Optional[str]:
        x = node.inputs[0]
        if x is not None and x.dtype is not None and not x.dtype.is_float:
            return f"input X must be a float tensor, not {x.dtype.short}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        x, r = ctx.type(0), ctx.type(2)
        if x is None:
            return [None] * ctx.num_outputs
        num_directions = 2 if ctx.attrs["direction"] == "bidirectional" else 1
        hidden = ctx.attrs.get("hidden_size")
        if hidden is None and r is not None and r.shape is not None:
            hidden = r.shape[-1]
        seq: Any = None
        batch: Any = None
        if x.shape is not None and len(x.shape) == 3:
            seq, batch = (x.shape[1], x.shape[0]) if ctx.attrs["layout"] else (x.shape[0], x.shape[1])
        if ctx.attrs["layout"]:
            y = (batch, seq, num_directions, hidden)
            state = (batch, num_directions, hidden)
        else:
            y = (seq, num_directions, batch, hidden)
            state = (num_directions, batch, hidden)
        types = [TensorType(x.dtype, y), TensorType(x.dtype, state), TensorType(x.dtype, state)]
        return types[:ctx.num_outputs]

    # -- the cell ---------------------------------------------------------------------------
    def step(self, xw: Tensor, state: list[Tensor], r: Tensor, rb: Tensor, peephole: Optional[Tensor],
             acts: list[Activation], clip: Callable[[Tensor], Tensor], attrs: dict[str, Any]) -> list[Tensor]:
        """One time step: the input projection `xw` ([batch, gates*hidden]) and the state
        (h, or h and c) give the new state."""
        raise NotImplementedError

    def reference(self, ctx: RunContext, inputs: list[Optional[Tensor]], attrs: dict[str, Any]) -> list[Tensor]:
        x, w, r = inputs[0], inputs[1], inputs[2]
        bias = inputs[3] if len(inputs) > 3 else None
        seq_lens = inputs[4] if len(inputs) > 4 else None
        initial = [inputs[5] if len(inputs) > 5 else None]
        if self.num_outputs_max == 3:
            initial.append(inputs[6] if len(inputs) > 6 else None)
        peepholes = inputs[7] if len(inputs) > 7 else None

        out_dtype = x.dtype
        dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
        layout = attrs["layout"]
        x = x.to(dtype)
        if layout:
            x = x.transpose(0, 1)
        seq, batch = x.shape[0], x.shape[1]
        num_directions = w.shape[0]
        hidden = r.shape[-1]
        gates = self.num_gates * hidden
        w, r = w.to(dtype), r.to(dtype)
        if bias is None:
            bias = torch.zeros(num_directions, 2 * gates, dtype=dtype, device=x.device)
        bias = bias.to(dtype)
        states0 = []
        for s in initial:
            if s is None:
                s = torch.zeros(num_directions, batch, hidden, dtype=dtype, device=x.device)
            else:
                s = s.to(dtype)
                if layout:
                    s = s.transpose(0, 1)
            states0.append(s)
        mask = None
        if seq_lens is not None:
            lens = seq_lens.to(device=x.device, dtype=torch.int64)
            if bool((lens < seq).any()):
                steps = torch.arange(seq, device=x.device).unsqueeze(1)
                mask = (steps < lens.unsqueeze(0)).unsqueeze(-1)  # [seq, batch, 1]

        threshold = attrs["clip"]
        clip = (lambda t: t) if threshold is None else (lambda t: torch.clamp(t, -threshold, threshold))
        per_direction = len(self.default_activations)
        direction = attrs["direction"]
        ys, finals = [], []
        for d in range(num_directions):
            reverse = direction == "reverse" or d == 1
            lo = d * per_direction
            acts = [_activation(n, a, b) for n, a, b in zip(attrs["activations"][lo:lo + per_direction],
                                                             attrs["activation_alpha"][lo:lo + per_direction],
                                                             attrs["activation_beta"][lo:lo + per_direction])]
            xw = torch.matmul(x, w[d].transpose(0, 1)) + bias[d, :gates]
            rb = bias[d, gates:]
            rt = r[d].transpose(0, 1)
            peephole = None if peepholes is None else peepholes[d].to(dtype)
            state = [s[d] for s in states0]
            y = x.new_zeros(seq, batch, hidden)
            order = range(seq - 1, -1, -1) if reverse else range(seq)
            for t in order:
                new = self.step(xw[t], state, rt, rb, peephole, acts, clip, attrs)
                if mask is None:
                    state = new
                    y[t] = new[0]
                else:
                    # Steps past a batch entry's length leave its state alone and output zeros;
                    # walking backwards, its reverse pass thus starts at its own last step.
                    m = mask[t]
                    state = [torch.where(m, n, s) for n, s in zip(new, state)]
                    y[t] = torch.where(m, new[0], torch.zeros_like(new[0]))
            ys.append(y)
            finals.append(state)
        y = torch.stack(ys, 1)  # [seq, dirs, batch, hidden]
        outs = [torch.stack([f[i] for f in finals], 0) for i in range(len(states0))]  # [dirs, batch, hidden]
        if layout:
            y = y.permute(2, 0, 1, 3)
            outs = [o.transpose(0, 1) for o in outs]
        return [t.contiguous().to(out_dtype) for t in [y, *outs]]


def _split(t: Tensor, parts: int) -> tuple[Tensor, ...]:
    return torch.chunk(t, parts, dim=-1)


@register
class RNN(_Recurrent):
    name = "RNN"
    num_gates = 1
    default_activations = ["Tanh"]
    num_outputs_max = 2

    def step(self, xw, state, r, rb, peephole, acts, clip, attrs):
        (h,) = state
        return [acts[0](clip(xw + torch.matmul(h, r) + rb))]


@register
class GRU(_Recurrent):
    name = "GRU"
    num_gates = 3
    default_activations = ["Sigmoid", "Tanh"]
    num_outputs_max = 2
    attrs = {**_Recurrent.attrs, "linear_before_reset": 0}

    def step(self, xw, state, r, rb, peephole, acts, clip, attrs):
        (h,) = state
        f, g = acts
        hidden = h.shape[-1]
        xz, xr, xh = _split(xw, 3)
        rbz, rbr, rbh = _split(rb, 3)
        hzr = torch.matmul(h, r[:, :2 * hidden])
        hz, hr = _split(hzr, 2)
        z = f(clip(xz + hz + rbz))
        reset = f(clip(xr + hr + rbr))
        rh = r[:, 2 * hidden:]
        if attrs["linear_before_reset"]:
            candidate = g(clip(xh + reset * (torch.matmul(h, rh) + rbh)))
        else:
            candidate = g(clip(xh + torch.matmul(reset * h, rh) + rbh))
        return [(1 - z) * candidate + z * h]


@register
class LSTM(_Recurrent):
    name = "LSTM"
    num_gates = 4
    default_activations = ["Sigmoid", "Tanh", "Tanh"]
    num_outputs_max = 3
    attrs = {**_Recurrent.attrs, "input_forget": 0}

    def step(self, xw, state, r, rb, peephole, acts, clip, attrs):
        h, c = state
        f, g, hact = acts
        gi, go, gf, gc = _split(xw + torch.matmul(h, r) + rb, 4)
        if peephole is not None:
            pi, po, pf = _split(peephole, 3)
            gi = gi + pi * c
            gf = gf + pf * c
        i = f(clip(gi))
        forget = 1 - i if attrs["input_forget"] else f(clip(gf))
        c_new = forget * c + i * g(clip(gc))
        if peephole is not None:
            go = go + po * c_new
        o = f(clip(go))
        return [o * hact(c_new), c_new]
