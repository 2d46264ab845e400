"""Gather tactics: "triton" (embedding lookups) and "constant_indices".

"triton", for Gather along axis 0: index wrap and row copy in one kernel.

The reference wraps negative indices with three elementwise kernels (compare, add, where) before
index_select: four launches per lookup. BERT-base has four lookups (word, token type and position
embeddings, the pooler's first token), so at batch 1, where each launch costs 1-2 us of a
0.45 ms inference, that is 12 launches for nothing. This kernel reads each index, wraps it, and
copies the row.

Indices outside [-rows, rows) are an error in ONNX. A device-side assert on them would leave the
process's CUDA context unusable, so this kernel writes zeros for such rows, as the reference does
on a GPU (ops/_shape_common.select_indices): a server keeps running; the CPU backend reports the
index (`kiln compare` runs it). Data of the float and integer dtypes in _DATA_DTYPES; indices int32 or int64.

"constant_indices", for indices that are a constant (exporters' mask and pooler code: BERT's
padding mask is gathered with arange(sequence), its pooler takes token 0 with a scalar): the
indices are checked against the axis and wrapped once, not on every call; where they are
consecutive the output is a view of the data (narrow and reshape, no kernel at all), else one
index_select. At batch 1 that removes eight launches from BERT-base. An axis whose size is known
only at run time (the pooler of an engine built for a range of sequence lengths) is checked once
per size, on the host (the first call at a new shape runs eagerly, before any graph capture); a
size the indices do not fit runs the reference (zero rows on a GPU, as above).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ...ir import DType, Node
from ...ops import get_op
from ...ops.registry import normalize_axis
from ._common import DerivedTensors, input_dtype, input_shape, next_power_of_2, register, triton_missing

# Elements one program copies (BLOCK_I * BLOCK_W), and the widest column block.
_ELEMENTS_PER_PROGRAM = 4096
_MAX_BLOCK_W = 1024
_INDEX_DTYPES = (DType.INT32, DType.INT64)
_DATA_DTYPES = (DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32, DType.FLOAT64, DType.INT8, DType.UINT8, DType.INT16,
                DType.INT32, DType.INT64, DType.BOOL)


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
        out = ctx.output(0, tuple(idx.shape) + tuple(data.shape[1:]), data.dtype)
        n_idx = idx.numel()
        if n_idx and width:
            block_w = min(next_power_of_2(width), _MAX_BLOCK_W)
            block_i = max(1, _ELEMENTS_PER_PROGRAM // block_w)
            grid = ((n_idx + block_i - 1) // block_i, (width + block_w - 1) // block_w)
            self._kernel[grid](data, idx, out, n_idx, rows, width, BLOCK_I=block_i, BLOCK_W=block_w)
        return out


def _constant_supports(node: Node) -> Optional[str]:
    indices = node.inputs[1].const
    if indices is None:
        return "the indices are not a constant"
    data = input_shape(node, 0)
    if data is None or not data:
        return "data rank unknown before run time or 0-D"
    size = data[normalize_axis(int(node.attrs.get("axis", 0)), len(data))]
    flat = np.asarray(indices).reshape(-1)
    if isinstance(size, int) and flat.size and (flat.min() < -size or flat.max() >= size):
        return f"constant indices outside [-{size}, {size}) (the reference reports the error)"
    return None


@dataclass(frozen=True)
class _Indices:
    wrapped: Optional[torch.Tensor]  # flat, non-negative, on the data's device; None: outside the axis
    start: Optional[int]             # the first one when they are consecutive (the output is then a view)

    @staticmethod
    def of(indices: torch.Tensor, size: int) -> "_Indices":
        flat = indices.reshape(-1).to(torch.int64)
        host = flat.cpu()  # once per constant and size: lazily built state, made before any graph capture
        if host.numel() and (int(host.min()) < -size or int(host.max()) >= size):
            return _Indices(None, None)
        host = torch.where(host < 0, host + size, host)
        count = host.numel()
        consecutive = count > 0 and bool(torch.equal(host, torch.arange(int(host[0]), int(host[0]) + count)))
        return _Indices(host.to(indices.device), int(host[0]) if consecutive else None)


class ConstantIndexGather:
    def __init__(self) -> None:
        self.indices = DerivedTensors()

    def run(self, ctx: Any, inputs: list[Optional[torch.Tensor]], attrs: dict[str, Any]) -> torch.Tensor:
        data, idx = inputs[0], inputs[1]
        axis = normalize_axis(int(attrs.get("axis", 0)), data.dim())
        size = int(data.shape[axis])
        found = self.indices.get(idx, ("wrapped", size), lambda t: _Indices.of(t, size))
        if found.wrapped is None:
            # Only where the axis was symbolic at build time: the reference says what is wrong.
            return get_op("Gather").reference(ctx, inputs, attrs)
        shape = tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:])
        if found.start is not None:
            return data.narrow(axis, found.start, found.wrapped.numel()).reshape(shape)
        return data.index_select(axis, found.wrapped).reshape(shape)


def _register() -> None:
    impl = TritonGather()
    register("triton", "Gather", impl.run, _supports, source="triton", arena_outputs=True)
    constant = ConstantIndexGather()
    register("constant_indices", "Gather", constant.run, _constant_supports)


_register()

__all__ = ["ConstantIndexGather", "TritonGather"]
