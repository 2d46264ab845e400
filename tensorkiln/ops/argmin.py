"""ArgMin: index of the minimum along `axis` (tie and keepdims rules in argmax.py)."""

from __future__ import annotations

import torch

from .argmax import ArgExtremeOp
from .registry import register


@register
class ArgMin(ArgExtremeOp):
    name = "ArgMin"
    torch_fn = staticmethod(torch.argmin)
