"""FusedConv (domain "tensorkiln"): a convolution or transposed convolution with its epilogue.

    y = conv(X, W) + B                       (B: per output channel, optional)
    y = act(y + R)                           (R: residual, optional; residual_after_activation=0, ResNet order)
    y = act(y) + R                           (residual_after_activation=1)

`transposed` selects ConvTranspose semantics (weights [Cin, Cout/group, k...]); every attribute of
Conv / ConvTranspose keeps its ONNX meaning. `activation` names one entry of EPILOGUE_ACTIVATIONS
("" for none) and `activation_params` holds its parameters in the table's order.

The epilogue runs in place on the convolution's own fresh output (never on an input), so the
fused layer costs one convolution plus in-place elementwise passes: no extra allocations.
This module also holds the activation table the FusedMatMul epilogue shares.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..ir import DType, Node, TensorType
from ._conv_common import auto_pad_str, check_auto_pad, compute_dtype, conv_fn, conv_transpose_fn, ints_or, \
    pad_spatial, window_pads
from .conv_transpose import _pads_and_out
from .registry import InferContext, Op, get_op, register

DOMAIN = "tensorkiln"

# The largest float32: a Clip bound at or beyond it is no bound (ONNX's own default for opsets 6-10).
FLT_MAX = 3.4028234663852886e38

ActivationFn = Callable[[torch.Tensor, Sequence[float]], torch.Tensor]


def _clip(y: torch.Tensor, p: Sequence[float]) -> torch.Tensor:
    low = None if p[0] <= -FLT_MAX else float(p[0])
    high = None if p[1] >= FLT_MAX else float(p[1])
    if low is None and high is None:
        return y
    return y.clamp_(low, high)


def _selu(y: torch.Tensor, p: Sequence[float]) -> torch.Tensor:
    return F.elu_(y, float(p[0])).mul_(float(p[1]))


def _hard_sigmoid(y: torch.Tensor, p: Sequence[float]) -> torch.Tensor:
    return y.mul_(float(p[0])).add_(float(p[1])).clamp_(0.0, 1.0)


def _swish(y: torch.Tensor, p: Sequence[float]) -> torch.Tensor:
    return y.mul_(torch.sigmoid(y * float(p[0])))


# name -> (parameter names, function applied to a fresh tensor that it may overwrite).
EPILOGUE_ACTIVATIONS: dict[str, tuple[tuple[str, ...], ActivationFn]] = {
    "": ((), lambda y, p: y),
    "Relu": ((), lambda y, p: torch.relu_(y)),
    "Clip": (("min", "max"), _clip),
    "Sigmoid": ((), lambda y, p: torch.sigmoid_(y)),
    "Tanh": ((), lambda y, p: torch.tanh_(y)),
    "LeakyRelu": (("alpha",), lambda y, p: F.leaky_relu_(y, float(p[0]))),
    "Elu": (("alpha",), lambda y, p: F.elu_(y, float(p[0]))),
    "Selu": (("alpha", "gamma"), _selu),
    "Celu": (("alpha",), lambda y, p: F.celu_(y, float(p[0]))),
    "HardSigmoid": (("alpha", "beta"), _hard_sigmoid),
    "HardSwish": ((), lambda y, p: F.hardswish(y, inplace=True)),
    "Silu": ((), lambda y, p: F.silu(y, inplace=True)),
    "Swish": (("alpha",), _swish),
    "Gelu": ((), lambda y, p: F.gelu(y)),
    "GeluTanh": ((), lambda y, p: F.gelu(y, approximate="tanh")),
    "Mish": ((), lambda y, p: F.mish(y, inplace=True)),
    "Softplus": ((), lambda y, p: F.softplus(y)),
    "Softsign": ((), lambda y, p: F.softsign(y)),
    "ThresholdedRelu": (("alpha",), lambda y, p: F.threshold_(y, float(p[0]), 0.0)),
}
# The activations above that return a new tensor rather than overwriting theirs (torch has no in-place
# form): a GEMM tactic writing the product where the layer's output goes cannot use it for these.
NEW_TENSOR_ACTIVATIONS = frozenset({"Gelu", "GeluTanh", "Softplus", "Softsign"})

_FLOATS = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)


def check_epilogue(node: Node) -> Optional[str]:
    """Why a fused layer's epilogue attributes are invalid, or None."""
    act = node.attrs.get("activation", "")
    if act not in EPILOGUE_ACTIVATIONS:
        return f"unknown epilogue activation '{act}' (known: {', '.join(sorted(a for a in EPILOGUE_ACTIVATIONS if a))})"
    want = len(EPILOGUE_ACTIVATIONS[act][0])
    got = len(node.attrs.get("activation_params") or [])
    if got != want:
        return f"activation '{act}' takes {want} parameter(s), got {got}"
    dt = node.inputs[0].dtype if node.inputs and node.inputs[0] is not None else None
    if dt is not None and dt not in _FLOATS:
        return f"{node.op_type} of {dt.short} tensors is not supported"
    return None


def apply_epilogue(y: torch.Tensor, residual: Optional[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    """act(y + residual) or act(y) + residual, overwriting `y` (which must be the caller's fresh tensor)."""
    after = bool(attrs.get("residual_after_activation", 0))
    if residual is not None and not after:
        y = y.add_(residual.to(y.dtype))
    fn = EPILOGUE_ACTIVATIONS[attrs.get("activation", "")][1]
    y = fn(y, [float(v) for v in attrs.get("activation_params") or ()])
    if residual is not None and after:
        y = y.add_(residual.to(y.dtype))
    return y


def normalize_epilogue(out: dict[str, Any]) -> dict[str, Any]:
    out["activation"] = str(out.get("activation") or "")
    out["activation_params"] = [float(v) for v in out.get("activation_params") or ()]
    out["residual_after_activation"] = int(out.get("residual_after_activation") or 0)
    return out


def _conv(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    nd = x.dim() - 2
    strides = ints_or(attrs.get("strides"), 1, nd)
    dilations = ints_or(attrs.get("dilations"), 1, nd)
    pads = window_pads(auto_pad_str(attrs.get("auto_pad")), list(x.shape[2:]), list(w.shape[2:]), strides,
                       dilations, attrs.get("pads"))
    begins, ends = pads[:nd], pads[nd:]
    groups = int(attrs.get("group") or 1)
    if begins == ends:
        # Symmetric padding goes to the kernel itself: no padded copy of the input.
        return conv_fn(nd)(x, w, b, stride=strides, padding=begins, dilation=dilations, groups=groups)
    return conv_fn(nd)(pad_spatial(x, begins, ends), w, b, stride=strides, dilation=dilations, groups=groups)


def _conv_transpose(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], attrs: dict[str, Any]
                    ) -> torch.Tensor:
    nd = x.dim() - 2
    kernel = list(w.shape[2:])
    strides = ints_or(attrs.get("strides"), 1, nd)
    dilations = ints_or(attrs.get("dilations"), 1, nd)
    groups = int(attrs.get("group") or 1)
    pads, out = _pads_and_out(list(x.shape[2:]), kernel, attrs)
    begins, ends = pads[:nd], pads[nd:]
    # torch's output size: (in - 1) * s - 2 p + d (k - 1) + output_padding + 1, output_padding < max(s, d).
    extra = [out[i] - ((x.shape[2 + i] - 1) * strides[i] - 2 * begins[i] + dilations[i] * (kernel[i] - 1) + 1)
             for i in range(nd)]
    if begins == ends and min(begins, default=0) >= 0 and all(0 <= e < max(s, d) for e, s, d in
                                                                zip(extra, strides, dilations)):
        return conv_transpose_fn(nd)(x, w, b, stride=strides, padding=begins, output_padding=extra,
                                     groups=groups, dilation=dilations)
    # General case (asymmetric or negative pads, large output_padding): full result, then crop/extend.
    y = conv_transpose_fn(nd)(x, w, None, stride=strides, dilation=dilations, groups=groups)
    full = list(y.shape[2:])
    y = pad_spatial(y, [-p for p in begins], [out[i] + begins[i] - full[i] for i in range(nd)])
    if b is not None:
        y = y.add_(b.reshape(1, -1, *([1] * nd)))
    return y


@register
class FusedConv(Op):
    name = "FusedConv"
    domain = DOMAIN
    attrs = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None,
             "strides": None, "output_padding": None, "output_shape": None, "transposed": 0, "activation": "",
             "activation_params": None, "residual_after_activation": 0}

    def normalize(self, attrs: dict[str, Any], opset: int) -> dict[str, Any]:
        out = normalize_epilogue(super().normalize(attrs, opset))
        out["transposed"] = int(out["transposed"])
        return out

    def check(self, node: Node) -> Optional[str]:
        return check_auto_pad(node.attrs) or check_epilogue(node)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        base = get_op("ConvTranspose" if ctx.attrs.get("transposed") else "Conv")
        return base.infer(ctx)[:1]

    def reference(self, ctx, inputs, attrs):
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        residual = inputs[3] if len(inputs) > 3 else None
        cd = compute_dtype(x.dtype) if x.device.type == "cpu" else x.dtype
        xc, wc = x.to(cd), w.to(cd)
        bc = None if b is None else b.to(cd)
        y = (_conv_transpose if attrs.get("transposed") else _conv)(xc, wc, bc, attrs)
        y = apply_epilogue(y, residual, attrs)
        return y.to(x.dtype)


__all__ = ["DOMAIN", "EPILOGUE_ACTIVATIONS", "FLT_MAX", "FusedConv", "apply_epilogue", "check_epilogue",
           "normalize_epilogue"]
