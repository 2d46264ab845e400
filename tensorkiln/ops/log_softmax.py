"""LogSoftmax: log(softmax(x)) along `axis` (2-D flattening before opset 13, see softmax.py)."""

from __future__ import annotations

import torch

from .registry import register
from .softmax import AxisNormOp, accumulate_dtype


def _log_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.log_softmax(x, dim, dtype=accumulate_dtype(x)).to(x.dtype)


@register
class LogSoftmax(AxisNormOp):
    name = "LogSoftmax"
    fn = staticmethod(_log_softmax)
