"""Hardmax: 1 at the first maximum along `axis`, 0 elsewhere (2-D flattening before
opset 13, see softmax.py)."""

from __future__ import annotations

import torch

from .registry import register
from .softmax import AxisNormOp


def _hardmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    if x.shape[dim] == 0:
        return torch.zeros_like(x)
    index = torch.argmax(x, dim, keepdim=True)
    return torch.zeros_like(x).scatter_(dim, index, 1.0)


@register
class Hardmax(AxisNormOp):
    name = "Hardmax"
    fn = staticmethod(_hardmax)
