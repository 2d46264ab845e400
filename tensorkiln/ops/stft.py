"""STFT (opset 17): short-time Fourier transform of [batch, length, 1|2] signals.

Frames of `frame_length` samples start every `frame_step` samples (1 + (length -
frame_length) // frame_step of them), are multiplied by `window` and transformed;
output [batch, frames, bins, 2] with bins = frame_length // 2 + 1 when onesided.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ir import DType, Node, TensorType
from .registry import InferContext, Op, register

_FLOATS = {DType.FLOAT32, DType.FLOAT16, DType.FLOAT64, DType.BFLOAT16}


def _to_complex(x: torch.Tensor) -> torch.Tensor:
    """[..., 1] real or [..., 2] (re, im) -> complex128 [...]: double precision, as in DFT."""
    wide = x.to(torch.float64)
    if wide.shape[-1] == 1:
        return torch.complex(wide[..., 0], torch.zeros_like(wide[..., 0]))
    return torch.view_as_complex(wide.contiguous())


def _scalar(x: Optional[torch.Tensor]) -> Optional[int]:
    return None if x is None else int(x.reshape(-1)[0].item())


@register
class STFT(Op):
    name = "STFT"
    # frame_step and frame_length are read on the host: constants stay there (no device sync, capturable).
    host_inputs = (1, 3)
    attrs = {"onesided": 1}
    since_opset = 17

    def check(self, node: Node) -> Optional[str]:
        x = node.inputs[0]
        if x is not None and x.dtype is not None and x.dtype not in _FLOATS:
            return f"signal dtype {x.dtype.short} is not a float type"
        if x is not None and x.shape is not None and len(x.shape) != 3:
            return f"signal must have rank 3 [batch, length, 1|2], got rank {len(x.shape)}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None:
            return [None]
        if t.shape is None:
            return [TensorType(t.dtype, (None, None, None, 2))]
        batch, length = t.shape[0], t.shape[1]
        step = ctx.const_ints(1)
        frame_length: Optional[int] = None
        if ctx.has_input(3):
            given = ctx.const_ints(3)
            frame_length = given[0] if given else None
        elif ctx.has_input(2):
            w = ctx.shape(2)
            frame_length = w[0] if w is not None and isinstance(w[0], int) else None
        frames = None
        if step and frame_length is not None and isinstance(length, int):
            frames = 1 + (length - frame_length) // step[0]
        bins = None
        if frame_length is not None:
            bins = frame_length // 2 + 1 if ctx.attrs["onesided"] else frame_length
        return [TensorType(t.dtype, (batch, frames, bins, 2))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        step = _scalar(inputs[1])
        window = inputs[2] if len(inputs) > 2 else None
        frame_length = _scalar(inputs[3]) if len(inputs) > 3 else None
        if frame_length is None:
            frame_length = window.shape[0] if window is not None else x.shape[1]
        if window is not None and window.shape[0] != frame_length:
            raise ValueError(f"window length {window.shape[0]} != frame_length {frame_length}")
        signal = _to_complex(x)  # [batch, length]
        frames = signal.unfold(1, frame_length, step)  # [batch, frames, frame_length]
        if window is not None:
            frames = frames * window.to(torch.float64)
        spectrum = torch.fft.fft(frames, dim=-1)
        if attrs["onesided"]:
            spectrum = spectrum[..., : frame_length // 2 + 1]
        return torch.view_as_real(spectrum).to(x.dtype)
