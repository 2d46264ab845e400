"""cuDNN convolution tactics for Conv, ConvTranspose and tensorkiln::FusedConv.

Two layouts, chosen per layer by the auto-tuner:
- "cudnn_nchw": the input made contiguous (NCHW), one cuDNN call with the bias and the
  symmetric padding passed to the kernel (no padded copy of the input).
- "cudnn_nhwc": channels_last. The input is converted only when it is not channels_last
  already; an NHWC convolution's output is channels_last, so a chain of NHWC layers pays
  no conversion between them. Weights are converted once per weight tensor and cached.

FusedConv's epilogue (residual add, activation) runs in place on the convolution's fresh
output, as the op's definition does.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ...ir import Node
from ...ops._conv_common import auto_pad_str, conv_fn, conv_transpose_fn, ints_or, window_pads
from ...ops.fused_conv import apply_epilogue
from ._common import DerivedTensors, as_dtype, dtype_reason, input_shape, optional_input, register

_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def _spatial_rank(node: Node) -> Optional[int]:
    for i in (0, 1):
        shape = input_shape(node, i)
        if shape is not None:
            return len(shape) - 2
    return None


def _conv_padding_reason(node: Node, nd: int) -> Optional[str]:
    """Why the padding cannot be given to the kernel (asymmetric, or unknown before run time)."""
    attrs = node.attrs
    auto_pad = auto_pad_str(attrs.get("auto_pad"))
    if auto_pad == "VALID":
        return None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        x, w = input_shape(node, 0), input_shape(node, 1)
        kernel = attrs.get("kernel_shape") or (list(w[2:]) if w is not None else None)
        if x is None or kernel is None or not all(isinstance(d, int) for d in list(x[2:]) + list(kernel)):
            return f"auto_pad {auto_pad} with spatial sizes unknown before run time"
        pads = window_pads(auto_pad, list(x[2:]), kernel, ints_or(attrs.get("strides"), 1, nd),
                           ints_or(attrs.get("dilations"), 1, nd), None)
    else:
        pads = ints_or(attrs.get("pads"), 0, 2 * nd)
    if pads[:nd] != pads[nd:]:
        return f"asymmetric padding {pads} needs a padded copy of the input (the reference does it)"
    return None


def _transpose_reason(node: Node, nd: int) -> Optional[str]:
    attrs = node.attrs
    if auto_pad_str(attrs.get("auto_pad")) != "NOTSET":
        return "ConvTranspose with auto_pad (output size from the input) runs on the reference"
    if attrs.get("output_shape"):
        return "ConvTranspose with output_shape runs on the reference"
    pads = ints_or(attrs.get("pads"), 0, 2 * nd)
    if pads[:nd] != pads[nd:] or min(pads, default=0) < 0:
        return f"ConvTranspose padding {pads} is asymmetric or negative (the reference crops instead)"
    strides = ints_or(attrs.get("strides"), 1, nd)
    dilations = ints_or(attrs.get("dilations"), 1, nd)
    out_pad = ints_or(attrs.get("output_padding"), 0, nd)
    if any(not 0 <= p < max(s, d) for p, s, d in zip(out_pad, strides, dilations)):
        return f"output_padding {out_pad} is not below max(stride, dilation) as cuDNN needs"
    return None


class CudnnConv:
    """One convolution layout as a tactic; holds the weights it converted (per tactic instance)."""

    def __init__(self, layout: str):
        assert layout in ("nchw", "nhwc")
        self.layout = layout
        self.weights = DerivedTensors()
        # id(attrs) -> (attrs, input spatial sizes, call arguments): the geometry of a layer is
        # worked out once per input size, not on every call.
        self._geometry: dict[int, tuple[dict, tuple, dict[str, Any]]] = {}

    # -- applicability --------------------------------------------------------------------
    def supports(self, node: Node) -> Optional[str]:
        reason = dtype_reason(node)
        if reason:
            return reason
        nd = _spatial_rank(node)
        if nd is None:
            return "input rank unknown before run time"
        if nd not in (1, 2, 3):
            return f"{nd}-D convolution (cuDNN tactics take 1-D to 3-D)"
        if self.layout == "nhwc" and nd not in _CHANNELS_LAST:
            return f"{nd}-D convolution has no channels-last layout (2-D and 3-D do)"
        if node.attrs.get("transposed") or node.op_type == "ConvTranspose":
            return _transpose_reason(node, nd)
        return _conv_padding_reason(node, nd)

    # -- execution ------------------------------------------------------------------------
    def _call_args(self, attrs: dict[str, Any], x: torch.Tensor, w: torch.Tensor, transposed: bool
                   ) -> dict[str, Any]:
        spatial = tuple(x.shape[2:])
        cached = self._geometry.get(id(attrs))
        if cached is not None and cached[0] is attrs and cached[1] == spatial:
            return cached[2]
        nd = x.dim() - 2
        strides = ints_or(attrs.get("strides"), 1, nd)
        dilations = ints_or(attrs.get("dilations"), 1, nd)
        groups = int(attrs.get("group") or 1)
        if transposed:
            pads = ints_or(attrs.get("pads"), 0, 2 * nd)
            args = dict(stride=strides, padding=pads[:nd], output_padding=ints_or(attrs.get("output_padding"), 0, nd),
                        groups=groups, dilation=dilations)
        else:
            pads = window_pads(auto_pad_str(attrs.get("auto_pad")), list(spatial), list(w.shape[2:]), strides,
                               dilations, attrs.get("pads"))
            if pads[:nd] != pads[nd:]:
                # supports() saw symmetric padding; a run-time size that makes SAME padding uneven is a
                # shape the layer was not built for.
                raise ValueError(f"padding {pads} became asymmetric for input size {list(spatial)}")
            args = dict(stride=strides, padding=pads[:nd], dilation=dilations, groups=groups)
        self._geometry[id(attrs)] = (attrs, spatial, args)
        return args

    def _in_layout(self, x: torch.Tensor, nd: int) -> torch.Tensor:
        """`x` in the tactic's memory format, converted only when it is not already."""
        if self.layout == "nhwc":
            fmt = _CHANNELS_LAST[nd]
            return x if x.is_contiguous(memory_format=fmt) else x.contiguous(memory_format=fmt)
        return x if x.is_contiguous() else x.contiguous()

    def _weight(self, w: torch.Tensor, dtype: torch.dtype, nd: int) -> torch.Tensor:
        if self.layout == "nhwc":
            fmt = _CHANNELS_LAST[nd]
            if w.dtype == dtype and w.is_contiguous(memory_format=fmt):
                return w
            return self.weights.get(w, ("nhwc", dtype), lambda s: s.to(dtype).contiguous(memory_format=fmt))
        if w.dtype == dtype and w.is_contiguous():
            return w
        return self.weights.get(w, ("nchw", dtype), lambda s: s.to(dtype).contiguous())

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        x, w = inputs[0], inputs[1]
        b = optional_input(inputs, 2)
        residual = optional_input(inputs, 3)
        nd = x.dim() - 2
        x = self._in_layout(x, nd)
        wc = self._weight(w, x.dtype, nd)
        bc = as_dtype(self.weights, b, x.dtype)
        transposed = bool(attrs.get("transposed"))
        args = self._call_args(attrs, x, wc, transposed)
        fn = conv_transpose_fn(nd) if transposed else conv_fn(nd)
        y = fn(x, wc, bc, **args)
        if "activation" in attrs:  # FusedConv: the epilogue overwrites the fresh output
            y = apply_epilogue(y, residual, attrs)
        return y


class CudnnFusedReluConv(CudnnConv):
    """FusedConv with a ReLU epilogue in ONE cuDNN call, channels_last: conv + bias + ReLU
    (cudnn_convolution_relu), or conv + bias + residual + ReLU (cudnn_convolution_add_relu).
    Without it the bias add, the residual add and the ReLU are each a pass over the output:
    at ResNet-50 batch 128 those passes cost about as much as the convolutions."""

    def __init__(self) -> None:
        super().__init__("nhwc")

    def supports(self, node: Node) -> Optional[str]:
        if node.op_type != "FusedConv":
            return "only FusedConv layers carry the ReLU epilogue this tactic fuses"
        if node.attrs.get("activation") != "Relu":
            return f"activation '{node.attrs.get('activation')}': cuDNN's fused kernels apply only ReLU"
        if len(node.inputs) > 3 and node.inputs[3] is not None and node.attrs.get("residual_after_activation"):
            return "the residual is added after the ReLU; cuDNN adds it before"
        if _spatial_rank(node) != 2:
            return "cuDNN's fused conv-bias-ReLU takes 2-D convolutions"
        return super().supports(node)

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        x, w = inputs[0], inputs[1]
        b = optional_input(inputs, 2)
        residual = optional_input(inputs, 3)
        x = self._in_layout(x, 2)
        wc = self._weight(w, x.dtype, 2)
        bc = as_dtype(self.weights, b, x.dtype)
        args = self._call_args(attrs, x, wc, False)
        geometry = (args["stride"], args["padding"], args["dilation"], args["groups"])
        if residual is None:
            return torch.cudnn_convolution_relu(x, wc, bc, *geometry)
        z = self._in_layout(residual.to(x.dtype), 2)
        return torch.cudnn_convolution_add_relu(x, wc, z, 1.0, bc, *geometry)


class CudnnConvTranspose(CudnnConv):
    """The same tactic for the plain ConvTranspose op (its attrs carry no `transposed`)."""

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        x, w = inputs[0], inputs[1]
        b = optional_input(inputs, 2)
        nd = x.dim() - 2
        x = self._in_layout(x, nd)
        wc = self._weight(w, x.dtype, nd)
        bc = as_dtype(self.weights, b, x.dtype)
        return conv_transpose_fn(nd)(x, wc, bc, **self._call_args(attrs, x, wc, True))


def _register() -> None:
    for layout in ("nchw", "nhwc"):
        name = f"cudnn_{layout}"
        conv = CudnnConv(layout)
        register(name, "Conv", conv.run, conv.supports, source="cudnn", fresh_outputs=True)
        register(name, "FusedConv", conv.run, conv.supports, domain="tensorkiln", source="cudnn", fresh_outputs=True)
        transpose = CudnnConvTranspose(layout)
        register(name, "ConvTranspose", transpose.run, transpose.supports, source="cudnn", fresh_outputs=True)
    fused = CudnnFusedReluConv()
    register("cudnn_fused_relu", "FusedConv", fused.run, fused.supports, domain="tensorkiln", source="cudnn",
             fresh_outputs=True)


_register()

__all__ = ["CudnnConv", "CudnnConvTranspose", "CudnnFusedReluConv"]
