"""MelWeightMatrix (opset 17): triangular filters mapping a one-sided spectrum to mel bins.

Output [dft_length // 2 + 1, num_mel_bins]. Band edges are spaced evenly on the mel
scale (mel = 2595 log10(1 + hz / 700)) between the two edge frequencies and rounded
down to spectrogram bins, exactly as the ONNX reference does.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..ir import DType, Node, TensorType
from .registry import InferContext, Op, register


def _hz_to_mel(hz: torch.Tensor) -> float:
    # log1p and the scale factor in the input's precision, then double (the reference's order).
    return float(2595 * torch.log1p(hz / 700)) / math.log(10)


@register
class MelWeightMatrix(Op):
    # Every input is a scalar read on the host: constants stay there (no device sync, capturable).
    host_inputs = (0, 1, 2, 3, 4)
    name = "MelWeightMatrix"
    attrs = {"output_datatype": DType.FLOAT32.value}
    since_opset = 17

    def check(self, node: Node) -> Optional[str]:
        try:
            DType(node.attrs["output_datatype"]).torch
        except (ValueError, TypeError):
            return f"output_datatype {node.attrs['output_datatype']} is not supported"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        mel_bins, dft_length = ctx.const_ints(0), ctx.const_ints(1)
        shape = (dft_length[0] // 2 + 1 if dft_length else None, mel_bins[0] if mel_bins else None)
        return [TensorType(DType(ctx.attrs["output_datatype"]), shape)]

    def reference(self, ctx, inputs, attrs):
        num_mel_bins = int(inputs[0].reshape(-1)[0].item())
        dft_length = int(inputs[1].reshape(-1)[0].item())
        sample_rate = int(inputs[2].reshape(-1)[0].item())
        low_mel = _hz_to_mel(inputs[3].reshape(-1)[0].cpu())
        high_mel = _hz_to_mel(inputs[4].reshape(-1)[0].cpu())
        mel_step = (high_mel - low_mel) / (num_mel_bins + 2)
        edges = []
        for i in range(num_mel_bins + 2):
            hz = 700 * math.expm1((i * mel_step + low_mel) / 2595 * math.log(10))
            edges.append(int(((dft_length + 1) * hz) // sample_rate))
        out = torch.zeros(dft_length // 2 + 1, num_mel_bins, dtype=torch.float64)
        for i in range(num_mel_bins):
            lower, center, upper = edges[i], edges[i + 1], edges[i + 2]
            if center == lower:
                out[center, i] = 1
            else:
                for j in range(lower, center + 1):
                    out[j, i] = (j - lower) / (center - lower)
            for j in range(center, upper):
                out[j, i] = (upper - j) / (upper - center)
        return out.to(device=ctx.device, dtype=DType(attrs["output_datatype"]).torch)
