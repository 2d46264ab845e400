"""CumProd (opset 26): running product along an axis, sharing CumSum's exclusive/reverse handling."""

from __future__ import annotations

import torch

from .cum_sum import Cumulative
from .registry import register


@register
class CumProd(Cumulative):
    name = "CumProd"
    fn = torch.cumprod
    identity = 1
