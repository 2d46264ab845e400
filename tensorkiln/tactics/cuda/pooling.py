""""triton" tactic for MaxPool: 2-D max pooling in one pass over the input, in its memory format.

The reference pads with -inf into a new tensor where torch's own padding cannot express the
windows, and torch's CUDA max-pool kernels are slow on both layouts: ResNet-50's stem pool
(128x64x112x112 -> 56x56, fp16) took 0.42 ms on an H200 in the NHWC kernel and as long in the
NCHW one, for 256 MB of traffic (about 64 us at the memory's speed). This kernel reads each
window straight from the input (out-of-range taps read -inf, as ONNX's padding does), keeps
channels_last inputs channels_last, and propagates NaN as torch does. It computes no Indices:
layers whose Indices output exists keep the reference.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ...ir import Node
from ...ops._conv_common import PoolGeometry
from ._common import FAST_FLOATS, dtype_reason, input_shape, next_power_of_2, register, triton_missing

_WARPS = 4


def _supports(node: Node) -> Optional[str]:
    reason = triton_missing() or dtype_reason(node, FAST_FLOATS)
    if reason:
        return reason
    if any(v is not None for v in node.outputs[1:]):
        return "the Indices output is used (the reference computes it)"
    shape = input_shape(node, 0)
    if shape is None:
        return "input rank unknown before run time"
    if len(shape) != 4:
        return f"{len(shape) - 2}-D pooling (this kernel is 2-D)"
    return None


def _tile(c: int, channels_last: bool) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C): channels along the contiguous axis when channels_last, pixels otherwise."""
    if channels_last:
        block_c = min(64, next_power_of_2(c))
        return 2048 // block_c, block_c
    return 256, 1


class TritonMaxPool:
    def __init__(self) -> None:
        self._kernel: Any = None

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        if self._kernel is None:
            from .pool_kernels import max_pool2d_kernel
            self._kernel = max_pool2d_kernel
        x = inputs[0]
        n, c, h, w = x.shape
        geo = PoolGeometry([h, w], attrs)
        oh, ow = geo.out_sizes
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if not channels_last and not x.is_contiguous():
            x = x.contiguous()
        y = ctx.output(0, (n, c, oh, ow), x.dtype, fmt)
        pixels = n * oh * ow
        if y.numel() == 0:
            return y
        block_p, block_c = _tile(c, channels_last)
        grid = (math.ceil(pixels / block_p), math.ceil(c / block_c))
        self._kernel[grid](x, y, pixels, c, oh, ow, h, w, *x.stride(), *y.stride(),
                           SH=geo.strides[0], SW=geo.strides[1], PH=geo.pad_begins[0], PW=geo.pad_begins[1],
                           DH=geo.dilations[0], DW=geo.dilations[1], KH=geo.kernel[0], KW=geo.kernel[1],
                           BLOCK_P=block_p, BLOCK_C=block_c, num_warps=_WARPS)
        return y


def _register() -> None:
    pool = TritonMaxPool()
    register("triton", "MaxPool", pool.run, _supports, source="triton", arena_outputs=True)


_register()

__all__ = ["TritonMaxPool"]
