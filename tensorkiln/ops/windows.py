"""Window functions (opset 17): HannWindow, HammingWindow, BlackmanWindow.

Each is a sum of cosines `sum_k a_k * cos(2*pi*k*n / N)` over n in [0, size), with
N = size for a periodic window and size - 1 for a symmetric one. Values are computed
in float64 (as the ONNX reference does) and cast to `output_datatype`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..ir import DType, Node, TensorType
from .registry import InferContext, Op, register

_NUMERIC_OUTPUTS = {DType.FLOAT32, DType.FLOAT16, DType.FLOAT64, DType.BFLOAT16, DType.INT8, DType.INT16,
                    DType.INT32, DType.INT64, DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64}


class CosineWindow(Op):
    attrs = {"output_datatype": DType.FLOAT32.value, "periodic": 1}
    # The size is read on the host: a constant stays there (no device sync, capturable).
    host_inputs = (0,)

    def __init__(self, name: str, coefficients: tuple[float, ...]):
        self.name = name
        self.coefficients = coefficients

    def check(self, node: Node) -> Optional[str]:
        code = node.attrs["output_datatype"]
        try:
            dtype = DType(code)
        except ValueError:
            return f"output_datatype {code} is not an ONNX tensor type"
        if dtype not in _NUMERIC_OUTPUTS:
            return f"output_datatype {dtype.short} is not supported for {self.name}"
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        size = ctx.const_ints(0)
        return [TensorType(DType(ctx.attrs["output_datatype"]), (size[0] if size else None,))]

    def reference(self, ctx, inputs, attrs):
        size_tensor = inputs[0]
        size = int(size_tensor.reshape(-1)[0].item())
        period = size if attrs["periodic"] else size - 1
        n = torch.arange(size, dtype=torch.float64, device=ctx.device)
        out = torch.zeros(size, dtype=torch.float64, device=ctx.device)
        for k, a in enumerate(self.coefficients):
            out = out + (a * torch.cos(n * (2 * math.pi * k) / period) if k else a)
        return out.to(DType(attrs["output_datatype"]).torch)


_HAMMING_ALPHA = 25.0 / 46.0

for _window in (
    CosineWindow("HannWindow", (0.5, -0.5)),
    CosineWindow("HammingWindow", (_HAMMING_ALPHA, -(1.0 - _HAMMING_ALPHA))),
    CosineWindow("BlackmanWindow", (0.42, -0.5, 0.08)),
):
    register(_window)
