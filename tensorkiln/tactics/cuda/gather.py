""""triton" tactic for Gather along axis 0 (embedding lookups): index wrap and row copy in one kernel.

The reference wraps negative indices with three elementwise kernels (compare, add, where) before
index_select: four launches per lookup. BERT-base has four lookups (word, token type and position
embeddings, the pooler's first token), so at batch 1, where each launch costs 1-2 us of a
0.45 ms inference, that is 12 launches for nothing. This kernel reads each index, wraps it, and
copies the row.

Indices outside [-rows, rows) are an error in ONNX. The reference's index_select stops on them
with a device-side assert, which leaves the process's CUDA context unusable; this kernel writes
zeros for such rows instead (a server keeps running; `kiln compare` against the reference shows
the layer). Data of the float and integer dtypes in _DATA_DTYPES; indices int32 or int64.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ...ir import DType, Node
from ...ops.registry import normalize_axis
from ._common import input_dtype, input_shape, next_power_of_2, register, triton_missing

# Elements one program copies (BLOCK_I * BLOCK_W), and the widest column block.
_ELEMENTS_PER_PROGRAM = 4096
_MAX_BLOCK_W = 1024
_INDEX_DTYPES = (DType.INT32, DType.INT64)
_DATA_DTYPES = (DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32, DType.FLOAT64, DType.INT8, DType.UINT8, DType.INT16,
                DType.INT32, DType.INT64)


def _supports(node: Node) -> Optional[str]:
    reason = triton_missing()
    if reason:
        return reason
    data = input_shape(node, 0)
    if data is None or not data:
        return "data rank unknown before run time or 0-D"
    if normalize_axis(int(node.attrs.get("axis", 0)), len(data)) != 0:
        return "a gather along an axis other than the first (the kernel copies whole rows)"
    dt = input_dtype(node, 0)
    if dt not in _DATA_DTYPES:
        return f"{'unknown' if dt is None else dt.short} data (the kernel copies {', '.join(d.short for d in _DATA_DTYPES)})"
    index_dt = input_dtype(node, 1)
    if index_dt not in _INDEX_DTYPES:
        return f"{'unknown' if index_dt is None else index_dt.short} indices (int32/int64 only)"
    return None


class TritonGather:
    def __init__(self) -> None:
        self._kernel: Any = None

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        if self._kernel is None:
            from .gather_kernels import gather_rows_kernel
            self._kernel = gather_rows_kernel
        data, idx = inputs[0].contiguous(), inputs[1].contiguous()
        rows = data.shape[0]
        width = math.prod(data.shape[1:])
        out = torch.empty(tuple(idx.shape) + tuple(data.shape[1:]), dtype=data.dtype, device=data.device)
        n_idx = idx.numel()
        if n_idx and width:
            block_w = min(next_power_of_2(width), _MAX_BLOCK_W)
            block_i = max(1, _ELEMENTS_PER_PROGRAM // block_w)
            grid = ((n_idx + block_i - 1) // block_i, (width + block_w - 1) // block_w)
            self._kernel[grid](data, idx, out, n_idx, rows, width, BLOCK_I=block_i, BLOCK_W=block_w)
        return out


def _register() -> None:
    impl = TritonGather()
    register("triton", "Gather", impl.run, _supports, source="triton")


_register()

__all__ = ["TritonGather"]
