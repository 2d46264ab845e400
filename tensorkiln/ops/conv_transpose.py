"""ConvTranspose: N-D transposed convolution with output_padding, output_shape and auto_pad."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from ..ir import Node, TensorType
from ._conv_common import auto_pad_str, check_auto_pad, compute_dtype, conv_transpose_fn, ints_or, pad_spatial
from .registry import InferContext, Op, register


def _pads_and_out(in_sizes: Sequence[Any], kernel: Sequence[int], attrs: dict[str, Any]) -> tuple[list[int], list[Any]]:
    """(pads, output spatial sizes) per the ONNX ConvTranspose rules; sizes may be symbolic (None)."""
    nd = len(kernel)
    strides = ints_or(attrs.get("strides"), 1, nd)
    dilations = ints_or(attrs.get("dilations"), 1, nd)
    out_pad = ints_or(attrs.get("output_padding"), 0, nd)
    auto_pad = auto_pad_str(attrs.get("auto_pad"))
    output_shape = attrs.get("output_shape")
    if output_shape:
        output_shape = [int(v) for v in output_shape][-nd:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [d * s if isinstance(d, int) else None for d, s in zip(in_sizes, strides)]
    if output_shape:
        begins, ends = [], []
        for i in range(nd):
            if not isinstance(in_sizes[i], int) or output_shape[i] is None:
                begins.append(0)
                ends.append(0)
                continue
            total = strides[i] * (in_sizes[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - output_shape[i]
            small = total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else total - small)
            ends.append(total - small if auto_pad == "SAME_UPPER" else small)
        return begins + ends, list(output_shape)
    pads = ints_or(attrs.get("pads"), 0, 2 * nd) if auto_pad == "NOTSET" else [0] * (2 * nd)
    out = [strides[i] * (in_sizes[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - pads[i] - pads[nd + i]
           if isinstance(in_sizes[i], int) else None for i in range(nd)]
    return pads, out


@register
class ConvTranspose(Op):
    name = "ConvTranspose"
    attrs = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "output_padding": None,
             "output_shape": None, "pads": None, "strides": None}

    def check(self, node: Node) -> Optional[str]:
        return check_auto_pad(node.attrs)

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        xs, ws = ctx.shape(0), ctx.shape(1)
        if ctx.type(0) is None:
            return [None]
        kernel = ctx.attrs.get("kernel_shape") or (list(ws[2:]) if ws is not None else None)
        if xs is None or kernel is None or any(not isinstance(k, int) for k in kernel):
            return [TensorType(ctx.dtype(0), None)]
        group = int(ctx.attrs.get("group") or 1)
        cout = ws[1] * group if ws is not None and isinstance(ws[1], int) else None
        _, out = _pads_and_out(list(xs[2:]), kernel, ctx.attrs)
        return [TensorType(ctx.dtype(0), (xs[0], cout, *out))]

    def reference(self, ctx, inputs, attrs):
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        nd = x.dim() - 2
        kernel = list(w.shape[2:])
        strides = ints_or(attrs.get("strides"), 1, nd)
        dilations = ints_or(attrs.get("dilations"), 1, nd)
        pads, out = _pads_and_out(list(x.shape[2:]), kernel, attrs)
        cd = compute_dtype(x.dtype) if x.device.type == "cpu" else x.dtype
        # Full (unpadded) result, then crop the begin pads and crop/extend the end to the wanted size:
        # this covers asymmetric and negative pads and output_padding, which torch's arguments cannot.
        y = conv_transpose_fn(nd)(x.to(cd), w.to(cd), None, stride=strides, dilation=dilations,
                                  groups=int(attrs.get("group") or 1))
        full = list(y.shape[2:])
        ends = [out[i] + pads[i] - full[i] for i in range(nd)]
        y = pad_spatial(y, [-p for p in pads[:nd]], ends)
        if b is not None:
            y = y + b.to(cd).reshape(1, -1, *([1] * nd))
        return y.to(x.dtype)
