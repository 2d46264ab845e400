"""DFT (opset 17, 20): discrete Fourier transform along one axis.

Complex values use ONNX's real layout: a trailing dimension of 2 (real, imaginary), or
of 1 for a real signal. Opset 17 names the axis by attribute (default 1); opset 20 by an
optional scalar input (default -2). `onesided` keeps the first n//2+1 bins of a forward
transform; with `inverse` it takes those bins and returns a real signal (irfft).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..ir import DType, Node, TensorType
from .registry import InferContext, Op, register

_FLOATS = {DType.FLOAT32, DType.FLOAT16, DType.FLOAT64, DType.BFLOAT16}


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """[..., 1] real or [..., 2] (re, im) -> complex128 tensor [...].

    Always double precision: a transform's rounding noise in float32 is larger than the
    tolerance that tests against numpy's (double precision) FFT allow.
    """
    wide = x.to(torch.float64)
    if wide.shape[-1] == 1:
        return torch.complex(wide[..., 0], torch.zeros_like(wide[..., 0]))
    return torch.view_as_complex(wide.contiguous())


def to_real_layout(z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.view_as_real(z).to(dtype)


@register
class DFT(Op):
    host_inputs = (1, 2)
    name = "DFT"
    attrs = {"inverse": 0, "onesided": 0}
    since_opset = 17

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = super().normalize(attrs, opset)
        if opset < 20:
            out.setdefault("axis", 1)
        return out

    def check(self, node: Node) -> Optional[str]:
        x = node.inputs[0]
        if x is not None and x.dtype is not None and x.dtype not in _FLOATS:
            return f"input dtype {x.dtype.short} is not a float type"
        if x is not None and x.shape is not None and isinstance(x.shape[-1], int) and x.shape[-1] not in (1, 2):
            return f"last dimension of the input must be 1 (real) or 2 (complex), got {x.shape[-1]}"
        return None

    @staticmethod
    def _axis(attrs: dict[str, Any], axis_input: Optional[list[int]], rank: int) -> int:
        # normalize() puts "axis" in attrs exactly for the opsets that have the attribute.
        if "axis" in attrs:
            axis = int(attrs["axis"])
        elif axis_input is None:
            axis = -2
        else:
            axis = axis_input[0]
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis < rank - 1:
            raise ValueError(f"DFT axis {axis} is out of range for an input of rank {rank} (last dim is re/im)")
        return axis

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        t = ctx.type(0)
        if t is None or t.shape is None:
            return [None if t is None else TensorType(t.dtype, None)]
        rank = len(t.shape)
        if "axis" not in ctx.attrs and ctx.has_input(2):
            axis_input = ctx.const_ints(2)
            if axis_input is None:
                return [TensorType(t.dtype, None)]
        else:
            axis_input = None
        axis = self._axis(ctx.attrs, axis_input, rank)
        inverse, onesided = ctx.attrs["inverse"], ctx.attrs["onesided"]
        length_dim = t.shape[axis]
        if ctx.has_input(1):
            given = ctx.const_ints(1)
            n = given[0] if given is not None else None
        elif inverse and onesided:
            n = 2 * (length_dim - 1) if isinstance(length_dim, int) else None
        else:
            n = length_dim
        shape = list(t.shape)
        if inverse or not onesided:
            shape[axis] = n
        else:
            shape[axis] = n // 2 + 1 if isinstance(n, int) else None
        shape[-1] = 1 if inverse and onesided else 2
        return [TensorType(t.dtype, tuple(shape))]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        rank = x.dim()
        axis_input = None
        if len(inputs) > 2 and inputs[2] is not None:
            axis_input = [int(inputs[2].reshape(-1)[0].item())]
        axis = self._axis(attrs, axis_input, rank)
        n: Optional[int] = None
        if len(inputs) > 1 and inputs[1] is not None:
            n = int(inputs[1].reshape(-1)[0].item())
        signal = to_complex(x)
        if attrs["inverse"]:
            if attrs["onesided"]:
                if n is None:
                    n = 2 * (x.shape[axis] - 1)
                return torch.fft.irfft(signal, n=n, dim=axis).unsqueeze(-1).to(x.dtype)
            return to_real_layout(torch.fft.ifft(signal, n=n, dim=axis), x.dtype)
        spectrum = torch.fft.fft(signal, n=n, dim=axis)
        if attrs["onesided"]:
            spectrum = spectrum.narrow(axis, 0, spectrum.shape[axis] // 2 + 1)
        return to_real_layout(spectrum, x.dtype)
