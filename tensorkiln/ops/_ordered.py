"""Comparing dtypes torch stores but cannot compare (bool, uint16/32/64) through a dtype
with the same order, for max/min/argmax/clip."""

from __future__ import annotations

import torch

_WIDER = {torch.uint16: torch.int32, torch.uint32: torch.int64}
# xor of the top bit maps uint64's order onto int64's.
_TOP_BIT = -(2 ** 63)


def ordered(x: torch.Tensor) -> torch.Tensor:
    """`x` in a dtype torch compares, with the same order; `unordered` undoes it."""
    if x.dtype == torch.bool:
        return x.to(torch.uint8)
    if x.dtype in _WIDER:
        return x.to(_WIDER[x.dtype])
    if x.dtype == torch.uint64:
        return x.view(torch.int64) ^ _TOP_BIT
    return x


def unordered(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of `ordered` for a result of an order-based function (max, min, clamp)."""
    if dtype == torch.uint64:
        return (y ^ _TOP_BIT).view(torch.uint64)
    return y if y.dtype == dtype else y.to(dtype)
