"""Helpers shared by the convolution and pooling ops: padding, output sizes, windowed reductions.

Pads follow ONNX's layout: ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from ..ir.shape import Dim, Shape
from .registry import InferContext

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T_FNS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL_FNS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def conv_fn(nd: int):
    if nd not in _CONV_FNS:
        raise ValueError(f"{nd}-D convolution is not supported (1-D, 2-D and 3-D are)")
    return _CONV_FNS[nd]


def conv_transpose_fn(nd: int):
    if nd not in _CONV_T_FNS:
        raise ValueError(f"{nd}-D transposed convolution is not supported (1-D, 2-D and 3-D are)")
    return _CONV_T_FNS[nd]


def ints_or(value: Optional[Sequence[int]], default: int, n: int) -> list[int]:
    return [int(v) for v in value] if value else [default] * n


def auto_pad_str(value: Any) -> str:
    s = value.decode() if isinstance(value, bytes) else str(value)
    return s or "NOTSET"


def check_auto_pad(attrs: dict[str, Any]) -> Optional[str]:
    ap = auto_pad_str(attrs.get("auto_pad", "NOTSET"))
    if ap not in AUTO_PADS:
        return f"auto_pad '{ap}' is not one of {', '.join(AUTO_PADS)}"
    return None


def window_pads(auto_pad: str, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                dilations: Sequence[int], pads: Optional[Sequence[int]]) -> list[int]:
    """Explicit begin/end pads of a sliding-window op (Conv, pooling) after resolving auto_pad."""
    nd = len(in_sizes)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(nd):
            out = -(-in_sizes[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_sizes[i])
            small = total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else total - small)
            ends.append(total - small if auto_pad == "SAME_UPPER" else small)
        return begins + ends
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    return ints_or(pads, 0, 2 * nd)


def window_out_size(in_size: int, k: int, s: int, d: int, pad_begin: int, pad_end: int, ceil_mode: bool = False) -> int:
    span = in_size + pad_begin + pad_end - ((k - 1) * d + 1)
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    # The last window must start inside the input or its begin padding (ONNX and PyTorch agree).
    if (out - 1) * s >= in_size + pad_begin:
        out -= 1
    return out


def sym_window_out(dim: Dim, k: int, s: int, d: int, pb: int, pe: int, auto_pad: str, ceil_mode: bool = False) -> Dim:
    if not isinstance(dim, int):
        return None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return -(-dim // s)
    return window_out_size(dim, k, s, d, pb, pe, ceil_mode)


def infer_window_shape(ctx: InferContext, kernel: Sequence[int], channels: Dim, ceil_mode: bool = False) -> Shape:
    """Output shape [N, channels, *spatial] of a sliding-window op over input 0."""
    shape = ctx.shape(0)
    if shape is None:
        return None
    nd = len(shape) - 2
    a = ctx.attrs
    strides = ints_or(a.get("strides"), 1, nd)
    dilations = ints_or(a.get("dilations"), 1, nd)
    auto_pad = auto_pad_str(a.get("auto_pad", "NOTSET"))
    pads = [0] * (2 * nd) if auto_pad != "NOTSET" else ints_or(a.get("pads"), 0, 2 * nd)
    spatial = tuple(sym_window_out(shape[2 + i], kernel[i], strides[i], dilations[i], pads[i], pads[nd + i],
                                   auto_pad, ceil_mode) for i in range(nd))
    return (shape[0], channels) + spatial


def pad_spatial(x: torch.Tensor, begins: Sequence[int], ends: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """Pad (negative values crop) the trailing len(begins) dims of x with a constant."""
    nd = len(begins)
    if not any(begins) and not any(ends):
        return x
    torch_pads: list[int] = []
    for i in reversed(range(nd)):
        torch_pads += [int(begins[i]), int(ends[i])]
    if value != 0.0 and not x.is_floating_point():
        info = torch.iinfo(x.dtype)
        value = max(min(value, info.max), info.min)
    return F.pad(x, torch_pads, mode="constant", value=value)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a windowed kernel computes in: half types widen to fp32 (CPU kernels lack them, and
    the accumulation is more accurate); small integers widen to fp32/fp64, where they are exact."""
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if dtype in (torch.int8, torch.uint8, torch.int16):
        return torch.float32
    if not dtype.is_floating_point:
        return torch.float64
    return dtype


_AVG_POOL_FNS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def window_sum(x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> torch.Tensor:
    """Sum over every (dilated) window of the trailing spatial dims of an N,C,... tensor, no padding.

    Uses pooling or strided views rather than a convolution with ones, which CUDA would run in TF32."""
    nd = len(kernel)
    count = 1
    for k in kernel:
        count *= k
    if all(d == 1 for d in dilations) and nd in _AVG_POOL_FNS:
        return _AVG_POOL_FNS[nd](x, list(kernel), list(strides)) * count
    windows = x
    for i in range(nd):
        span = (kernel[i] - 1) * dilations[i] + 1
        windows = windows.unfold(2 + i, span, strides[i])[..., ::dilations[i]]
    return windows.sum(dim=tuple(range(-nd, 0)))


def window_count(in_sizes: Sequence[int], out_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int], pad_begins: Sequence[int], lo: Sequence[int], hi: Sequence[int],
                 device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """How many taps of each window fall in [lo, hi) (input coordinates), as a tensor over the output's
    spatial dims; window o starts at input coordinate o * stride - pad_begin."""
    nd = len(in_sizes)
    total: Optional[torch.Tensor] = None
    for i in range(nd):
        o = torch.arange(out_sizes[i], device=device).unsqueeze(1)
        taps = torch.arange(kernel[i], device=device).unsqueeze(0) * dilations[i]
        pos = o * strides[i] - pad_begins[i] + taps
        inside = ((pos >= lo[i]) & (pos < hi[i])).sum(1).to(dtype)
        shape = [1] * nd
        shape[i] = out_sizes[i]
        inside = inside.reshape(shape)
        total = inside if total is None else total * inside
    assert total is not None
    return total


class PoolGeometry:
    """Where the windows of a pooling op lie over one input: sizes, pads and the padding the
    windows actually need (ceil_mode can reach past the end pad, auto-pad can fall short of it)."""

    def __init__(self, in_sizes: Sequence[int], attrs: dict[str, Any]):
        nd = len(in_sizes)
        self.nd = nd
        self.in_sizes = list(in_sizes)
        self.kernel = [int(k) for k in attrs["kernel_shape"]]
        self.strides = ints_or(attrs.get("strides"), 1, nd)
        self.dilations = ints_or(attrs.get("dilations"), 1, nd)
        auto_pad = auto_pad_str(attrs.get("auto_pad"))
        pads = window_pads(auto_pad, in_sizes, self.kernel, self.strides, self.dilations, attrs.get("pads"))
        self.pad_begins, self.pad_ends = pads[:nd], pads[nd:]
        ceil_mode = bool(attrs.get("ceil_mode") or 0) and auto_pad == "NOTSET"
        self.out_sizes = [(-(-in_sizes[i] // self.strides[i])) if auto_pad in ("SAME_UPPER", "SAME_LOWER")
                          else window_out_size(in_sizes[i], self.kernel[i], self.strides[i], self.dilations[i],
                                               self.pad_begins[i], self.pad_ends[i], ceil_mode)
                          for i in range(nd)]
        # End padding the last window needs (may differ from the declared end pad).
        self.needed_ends = [(self.out_sizes[i] - 1) * self.strides[i] + (self.kernel[i] - 1) * self.dilations[i] + 1
                            - in_sizes[i] - self.pad_begins[i] for i in range(nd)]

    def pad(self, x: torch.Tensor, value: float) -> torch.Tensor:
        return pad_spatial(x, self.pad_begins, self.needed_ends, value)

    def symmetric_padding(self) -> Optional[list[int]]:
        """The per-dim padding p for which torch's floor-mode windows (p on both sides, at most
        half the dilated kernel) are exactly these windows; None when there is none."""
        for i in range(self.nd):
            p, extent = self.pad_begins[i], (self.kernel[i] - 1) * self.dilations[i] + 1
            torch_out = (self.in_sizes[i] + 2 * p - extent) // self.strides[i] + 1
            if p < 0 or 2 * p > extent or self.needed_ends[i] > p or torch_out != self.out_sizes[i]:
                return None
        return list(self.pad_begins)

    def count(self, include_pad: bool, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if include_pad:
            lo = [-p for p in self.pad_begins]
            hi = [self.in_sizes[i] + self.pad_ends[i] for i in range(self.nd)]
        else:
            lo, hi = [0] * self.nd, self.in_sizes
        return window_count(self.in_sizes, self.out_sizes, self.kernel, self.strides, self.dilations,
                            self.pad_begins, lo, hi, device, dtype)


def check_pool_attrs(attrs: dict[str, Any]) -> Optional[str]:
    reason = check_auto_pad(attrs)
    if reason:
        return reason
    if not attrs.get("kernel_shape"):
        return "kernel_shape is required"
    return None


def infer_pool(ctx: InferContext) -> Shape:
    shape = ctx.shape(0)
    if shape is None:
        return None
    return infer_window_shape(ctx, [int(k) for k in ctx.attrs["kernel_shape"]], shape[1],
                              bool(ctx.attrs.get("ceil_mode") or 0))


def max_pool_nd(x: torch.Tensor, geo: PoolGeometry, with_indices: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    nd = geo.nd
    if nd not in _MAX_POOL_FNS:
        raise ValueError(f"{nd}-D max pooling is not supported (1-D, 2-D and 3-D are)")
    pad = geo.symmetric_padding()
    if pad is not None and not with_indices:
        # torch pads with -inf itself: no padded copy of the input.
        return _MAX_POOL_FNS[nd](x, geo.kernel, geo.strides, pad, geo.dilations), None
    padded = geo.pad(x, float("-inf"))
    res = _MAX_POOL_FNS[nd](padded, geo.kernel, geo.strides, 0, geo.dilations, return_indices=with_indices)
    if with_indices:
        return res[0], res[1]
    return res, None
