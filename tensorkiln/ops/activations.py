"""The parametric activations, as rows of one family table.

Each row names the ONNX op, its attributes with defaults, and the torch function
computing it from x and those attributes. Half-precision inputs are computed in float32
and cast back; integer inputs (Shrink allows them) in float64. Attributes of old opsets
that no longer mean anything (`consumed_inputs`) are dropped.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..ir import DType, TensorType
from .registry import InferContext, Op, register

ActivationFn = Callable[..., torch.Tensor]

_FLOATS = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)


class Activation(Op):
    def __init__(self, name: str, fn: ActivationFn, attrs: Optional[dict[str, Any]] = None,
                 integers: bool = False, choices: Optional[dict[str, tuple[Any, ...]]] = None):
        self.name = name
        self.fn = fn
        self.attrs = attrs or {}
        # Whether ONNX allows integer inputs (computed in float64, cast back).
        self.integers = integers
        # Attributes limited to a few values: name -> allowed values.
        self.choices = choices or {}

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        return super().normalize({k: v for k, v in attrs.items() if k in self.attrs}, opset)

    def check(self, node) -> Optional[str]:
        for attr, allowed in self.choices.items():
            if node.attrs.get(attr) not in allowed:
                return f"{self.name} {attr}={node.attrs.get(attr)!r} is not supported (one of {', '.join(map(repr, allowed))})"
        dt = node.inputs[0].dtype
        if dt is None or dt in _FLOATS or (self.integers and dt.is_integer and dt.has_torch):
            return None
        return f"{self.name} of {dt.short} tensors is not supported"

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        return [ctx.type(0)]

    def reference(self, ctx, inputs, attrs):
        x = inputs[0]
        kwargs = {k: attrs.get(k, v) for k, v in self.attrs.items()}
        if x.dtype in (torch.float16, torch.bfloat16):
            return self.fn(x.float(), **kwargs).to(x.dtype)
        if not x.is_floating_point():
            return self.fn(x.double(), **kwargs).to(x.dtype)
        return self.fn(x, **kwargs)


def _leaky_relu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.leaky_relu(x, float(alpha))


def _elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.where(x > 0, x, float(alpha) * torch.expm1(x))


def _selu(x: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    return float(gamma) * torch.where(x > 0, x, float(alpha) * torch.expm1(x))


def _celu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.celu(x, float(alpha))


def _hard_sigmoid(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return torch.clamp(float(alpha) * x + float(beta), 0.0, 1.0)


def _hard_swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


def _thresholded_relu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.where(x > float(alpha), x, torch.zeros_like(x))


def _gelu(x: torch.Tensor, approximate: str) -> torch.Tensor:
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + torch.tanh(inner))
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _mish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tanh(F.softplus(x))


def _shrink(x: torch.Tensor, bias: float, lambd: float) -> torch.Tensor:
    bias, lambd = float(bias), float(lambd)
    zero = torch.zeros_like(x)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero))


def _swish(x: torch.Tensor, alpha: float) -> torch.Tensor:
    if float(alpha) == 1.0 and x.is_floating_point():
        return torch.nn.functional.silu(x)  # one fused kernel instead of three
    return x * torch.sigmoid(float(alpha) * x)


_ACTIVATIONS = [
    Activation("LeakyRelu", _leaky_relu, {"alpha": 0.01}),
    Activation("Elu", _elu, {"alpha": 1.0}),
    Activation("Selu", _selu, {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    Activation("Celu", _celu, {"alpha": 1.0}),
    Activation("HardSigmoid", _hard_sigmoid, {"alpha": 0.2, "beta": 0.5}),
    Activation("HardSwish", _hard_swish),
    Activation("ThresholdedRelu", _thresholded_relu, {"alpha": 1.0}),
    Activation("Gelu", _gelu, {"approximate": "none"}, choices={"approximate": ("none", "tanh")}),
    Activation("Mish", _mish),
    Activation("Shrink", _shrink, {"bias": 0.0, "lambd": 0.5}, integers=True),
    Activation("Swish", _swish, {"alpha": 1.0}),
]

for _op in _ACTIVATIONS:
    register(_op)
