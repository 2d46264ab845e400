"""Element-type conversion with ONNX's rules, shared by Cast, CastLike, BitCast and Q/DQ.

Tensors of dtypes torch has are converted with torch (on any device). Dtypes torch lacks
(int4/uint4/int2/uint2/float4e2m1) live as numpy arrays with ml_dtypes dtypes on the
CPU: conversions to them go through numpy, conversions from them first widen losslessly
to a torch dtype (int8/uint8/float32).

ONNX rules torch does not follow on its own, and that are therefore spelled out here:
float8 saturation (and overflow to NaN/Inf without it), float8e8m0 rounding modes,
wrap-around of out-of-range integers.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from ..ir import DType, numpy_to_torch, torch_to_numpy

Array = Union[torch.Tensor, np.ndarray]

FLOAT8 = (DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ)

# Largest finite value, and the magnitude from which round-to-nearest-even leaves the
# finite range (`True` when a value exactly halfway past the largest one still rounds
# down to it, because its mantissa is even).
_FLOAT8_LIMITS = {
    DType.FLOAT8E4M3FN: (448.0, 464.0, True),
    DType.FLOAT8E4M3FNUZ: (240.0, 248.0, False),
    DType.FLOAT8E5M2: (57344.0, 61440.0, False),
    DType.FLOAT8E5M2FNUZ: (57344.0, 61440.0, False),
}

# Dtypes torch lacks, and the torch dtype that holds each of their values exactly.
_WIDEN = {
    DType.INT4: torch.int8, DType.INT2: torch.int8, DType.UINT4: torch.uint8, DType.UINT2: torch.uint8,
    DType.FLOAT4E2M1: torch.float32,
}

BIT_WIDTH = {
    DType.INT4: 4, DType.UINT4: 4, DType.FLOAT4E2M1: 4, DType.INT2: 2, DType.UINT2: 2, DType.BOOL: 8,
}

ROUND_MODES = ("up", "down", "nearest")


def dtype_of(x: Array) -> DType:
    if isinstance(x, torch.Tensor):
        return DType.from_torch(x.dtype)
    return DType.from_numpy(np.asarray(x).dtype)


def bit_width(dt: DType) -> int:
    return BIT_WIDTH.get(dt, dt.itemsize * 8)


def to_torch(x: Array, device: torch.device) -> torch.Tensor:
    """A torch tensor holding exactly the values of `x` (exotic dtypes are widened)."""
    if isinstance(x, torch.Tensor):
        return x
    array = np.asarray(x)
    dt = DType.from_numpy(array.dtype)
    if dt in _WIDEN:
        wide = DType.from_torch(_WIDEN[dt]).numpy
        return torch.from_numpy(array.astype(wide)).to(device)
    return numpy_to_torch(array).to(device)


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    dt = DType.from_torch(x.dtype)
    if dt == DType.BOOL:
        return x.detach().cpu().to(torch.uint8).numpy()
    if dt.is_float and dt not in (DType.FLOAT32, DType.FLOAT64):
        # ml_dtypes converts reliably from float32; every narrower float is exact in it.
        return x.detach().cpu().to(torch.float32).numpy()
    return torch_to_numpy(x)


def cast(x: Array, to: DType, device: torch.device, saturate: bool = True, round_mode: str = "up") -> Array:
    """`x` converted to dtype `to` following ONNX Cast; numpy for dtypes torch lacks."""
    src = dtype_of(x)
    if src == DType.STRING or to == DType.STRING:
        return _cast_string(x, src, to, device, saturate, round_mode)
    if src == to:
        return x
    t = to_torch(x, device)
    if not to.has_torch:
        # ml_dtypes follows ONNX here: integers truncate and wrap, float4e2m1 saturates.
        return _to_numpy(t).astype(to.numpy)
    if src == DType.FLOAT8E8M0 and to != DType.FLOAT32:
        t = t.to(torch.float32)
    if to in FLOAT8:
        return _to_float8(t, to, saturate)
    if to == DType.FLOAT8E8M0:
        return _to_float8e8m0(t, saturate, round_mode)
    if to == DType.BOOL:
        return t != 0
    if src in FLOAT8 and not to.is_float:
        t = t.to(torch.float32)
    return t.to(to.torch)


def _to_float8(t: torch.Tensor, to: DType, saturate: bool) -> torch.Tensor:
    if not t.is_floating_point() or t.dtype == torch.float8_e8m0fnu:
        t = t.to(torch.float32)
    largest, overflow_at, tie_stays = _FLOAT8_LIMITS[to]
    y = t.clamp(-largest, largest).to(to.torch)  # clamp keeps NaN
    if saturate:
        return y
    magnitude = t.abs()
    overflow = (magnitude > overflow_at) if tie_stays else (magnitude >= overflow_at)
    # e5m2 overflows to a signed infinity; the others have none and give NaN (signed where
    # the format has a sign for NaN, as e4m3fn does).
    special = float("inf") if to == DType.FLOAT8E5M2 else float("nan")
    replacement = torch.where(t > 0, special, -special).to(to.torch)
    return torch.where(overflow, replacement, y)


def _to_float8e8m0(t: torch.Tensor, saturate: bool, round_mode: str) -> torch.Tensor:
    """The exponent of float32 `t`, rounded as `round_mode` says (MX scale format)."""
    if round_mode not in ROUND_MODES:
        raise ValueError(f"unsupported round_mode '{round_mode}' (expected one of {ROUND_MODES})")
    bits = t.to(torch.float32).contiguous().view(torch.int32)
    exponent = (bits >> 23) & 0xFF
    fraction = bits & 0x7FFFFF
    special = exponent == 0xFF
    if round_mode == "nearest":
        guard = (bits & 0x400000) != 0
        rest = (bits & 0x3FFFFF) != 0
        round_up = guard & (rest | (exponent > 0))
    elif round_mode == "up":
        round_up = fraction != 0
    else:
        round_up = torch.zeros_like(special)
    round_up = round_up & ~special
    if saturate:
        round_up = round_up & (exponent != 0xFE)
    exponent = exponent + round_up.to(torch.int32)
    exponent = torch.where(special, torch.full_like(exponent, 0xFF), exponent)
    return exponent.to(torch.uint8).view(torch.float8_e8m0fnu)


def _cast_string(x: Array, src: DType, to: DType, device: torch.device, saturate: bool, round_mode: str) -> Array:
    if src == to:
        return x
    if to == DType.STRING:
        array = _to_numpy(to_torch(x, device)) if isinstance(x, torch.Tensor) else np.asarray(x)
        return array.astype(np.str_).astype(object)
    text = np.asarray(x)
    values = np.array([float(str(s.decode() if isinstance(s, bytes) else s)) for s in text.reshape(-1)],
                      dtype=np.float64).reshape(text.shape)
    return cast(torch.from_numpy(values).to(device), to, device, saturate, round_mode)


def bitcast(x: Array, to: DType, device: torch.device) -> Array:
    """Reinterpret the bits of `x` as dtype `to` (same bit width)."""
    src = dtype_of(x)
    if bit_width(src) != bit_width(to):
        raise ValueError(f"BitCast needs equal bit widths: {src.short} has {bit_width(src)}, "
                         f"{to.short} has {bit_width(to)}")
    if src == to:
        return x
    if isinstance(x, torch.Tensor) and to.has_torch:
        return x.contiguous().view(to.torch)
    # Sub-byte dtypes: ml_dtypes keeps each value's bits in the low bits of one byte.
    array = torch_to_numpy(x) if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)
    return np.ascontiguousarray(array).view(to.numpy)


def to_output(x: Array, device: torch.device) -> Array:
    """A torch tensor on `device` when torch has the dtype; numpy otherwise."""
    if isinstance(x, np.ndarray) and x.dtype != object and DType.from_numpy(x.dtype).has_torch:
        return numpy_to_torch(x).to(device)
    return x
