"""Helpers shared by the tensor/shape manipulation ops: symbolic dim arithmetic, axes,
attribute-or-input lookups and index normalisation.

Dims follow the IR: ``int`` (known), ``str`` (a named symbol) or ``None`` (unknown).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..ir import Node, Value
from ..ir.shape import Dim
from ._ordered import ordered, unordered
from .registry import InferContext, as_tuple, normalize_axis

# ONNX uses INT64_MAX/INT64_MIN for "to the end" in Slice; anything past this is "unbounded".
_UNBOUNDED = 2 ** 62


def dims_product(dims: Sequence[Dim]) -> Dim:
    """The product of dims: an int when all are known (or one is 0), a symbol when it is a
    lone symbol times ones, else unknown."""
    total = 1
    symbols: list[str] = []
    unknown = False
    for d in dims:
        if isinstance(d, int):
            total *= d
        elif isinstance(d, str):
            symbols.append(d)
        else:
            unknown = True
    if total == 0:
        return 0
    if unknown:
        return None
    if not symbols:
        return total
    if len(symbols) == 1 and total == 1:
        return symbols[0]
    return None


def normalize_axes(axes: Sequence[int], rank: int) -> list[int]:
    out = [normalize_axis(int(a), rank) for a in axes]
    if len(set(out)) != len(out):
        raise ValueError(f"axes {list(axes)} repeat an axis")
    return out


def axes_from(ctx: InferContext, input_index: int, attr: str = "axes") -> tuple[bool, Optional[list[int]]]:
    """Axes given by an attribute (old opsets) or a constant input (new ones).

    Returns (known, axes): known is False when the axes come from a non-constant input;
    axes is None when they were not given at all.
    """
    if ctx.attrs.get(attr) is not None:
        return True, list(ctx.attrs[attr])
    if ctx.has_input(input_index):
        values = ctx.const_ints(input_index)
        return (values is not None), values
    return True, None


def ints_from(inputs: Sequence[Optional[torch.Tensor]], index: int, attrs: dict[str, Any], attr: str
              ) -> Optional[list[int]]:
    """At run time: an int list from an attribute if set, else from an optional input."""
    if attrs.get(attr) is not None:
        return [int(v) for v in attrs[attr]]
    if index < len(inputs) and inputs[index] is not None:
        return as_tuple(inputs[index])
    return None


def scalar_int(x: torch.Tensor) -> int:
    return int(x.reshape(-1)[0].item())


def axis_index_inputs(node: Node) -> list[tuple[Value, Dim]]:
    """Op.index_inputs of a lookup (Gather, GatherElements) whose input 1 indexes input 0 along
    its `axis` attribute."""
    data, indices = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
    if data is None or indices is None or not data.shape:
        return []
    return [(indices, data.shape[int(node.attrs.get("axis", 0)) % len(data.shape)])]


_SIGNED_ALIAS = {getattr(torch, u): getattr(torch, i) for u, i in (("uint16", "int16"), ("uint32", "int32"),
                                                                  ("uint64", "int64")) if hasattr(torch, u)}


def bounded_indices(indices: torch.Tensor, size: int, what: str, axis: Optional[int] = None
                    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """ONNX indices into an axis of `size` (negative ones count from the end) as int64 indices
    torch's kernels accept, and where on a GPU the positions outside [-size, size) are (None on
    the CPU).

    Such an index is an error in ONNX. On the CPU this raises one naming the index and `what`
    (the op). On a GPU, torch's indexing kernels would stop on it with a device-side assert, which
    leaves the process's CUDA context unusable, and checking first would wait for the device on
    every call (and break CUDA-graph capture); so there it is clamped into range and the caller
    zeroes what it gathered (a gather) or drops what it would write (a scatter), as the Triton
    gather kernel does (tactics/cuda/gather.py)."""
    flat = indices.to(torch.int64)
    wrapped = torch.where(flat < 0, flat + size, flat)
    outside = (wrapped < 0) | (wrapped >= size)
    if flat.device.type == "cpu":
        if flat.numel() and bool(outside.any()):
            bad = int(flat[tuple(outside.nonzero()[0].tolist())])
            where = f" along axis {axis}" if axis is not None else ""
            raise IndexError(f"{what}: index {bad} is outside [-{size}, {size}){where}")
        return wrapped, None
    return wrapped.clamp(0, max(size - 1, 0)), outside


def bounded_index_tuples(indices: torch.Tensor, sizes: Sequence[int], what: str
                         ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """bounded_indices for index tuples (GatherND, ScatterND): the last dim of `indices` holds one
    coordinate per leading dim of the data, of the sizes `sizes`. Each coordinate is bounded by
    its size as a Python int: a tensor of the sizes would be copied from the host at every call,
    which a CUDA-graph capture does not allow (the engine would run without graphs)."""
    columns: list[torch.Tensor] = []
    outsides: list[torch.Tensor] = []
    for j, size in enumerate(sizes):
        try:
            column, outside = bounded_indices(indices[..., j], int(size), what)
        except IndexError as exc:
            raise IndexError(f"{exc} (coordinate {j} of an index tuple)") from None
        columns.append(column)
        if outside is not None:
            outsides.append(outside)
    coords = torch.stack(columns, -1) if columns else indices.to(torch.int64)
    return coords, (torch.stack(outsides, -1) if outsides else None)


def zero_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`x` with zeros where `mask` (broadcast) is true, in place."""
    # masked_fill has no kernel for torch's unsigned 16/32/64-bit types on CUDA: zero those
    # through the signed type of the same width (zero has the same bits).
    alias = _SIGNED_ALIAS.get(x.dtype)
    (x.view(alias) if alias is not None else x).masked_fill_(mask, 0)
    return x


def select_indices(data: torch.Tensor, axis: int, indices: torch.Tensor, what: str) -> torch.Tensor:
    """data.index_select(axis, indices) for ONNX indices (negative ones count from the end); an
    index outside the axis raises on the CPU and gives a row of zeros on a GPU (bounded_indices)."""
    size = int(data.shape[axis])
    flat = indices.reshape(-1)
    if data.device.type != "cpu" and size == 0:
        shape = list(data.shape)
        shape[axis] = flat.numel()
        return data.new_zeros(shape)
    wrapped, outside = bounded_indices(flat, size, what, axis)
    rows = data.index_select(axis, wrapped)
    if outside is not None:
        zero_where(rows, outside.reshape([-1 if d == axis else 1 for d in range(data.dim())]))
    return rows


def slice_bounds(start: int, end: int, step: int, dim: int) -> tuple[int, int]:
    """ONNX Slice clamping: negative values count from the end, then clamp to the dim,
    with the ranges a negative step needs."""
    if step == 0:
        raise ValueError("slice step cannot be 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start = min(max(start, 0), dim)
        end = min(max(end, 0), dim)
    else:
        start = min(max(start, 0), dim - 1)
        end = min(max(end, -1), dim - 1)
    return start, end


def slice_length(start: int, end: int, step: int) -> int:
    if step > 0:
        return max(0, (end - start + step - 1) // step)
    return max(0, (start - end - step - 1) // (-step))


def slice_dim(dim: Dim, start: int, end: int, step: int) -> Dim:
    """Output size of one sliced dim; symbolic dims survive a full forward slice."""
    if isinstance(dim, int):
        s, e = slice_bounds(start, end, step, dim)
        return slice_length(s, e, step)
    if step == 1 and start == 0 and end >= _UNBOUNDED:
        return dim
    return None


def concat_dim(dims: Sequence[Dim]) -> Dim:
    """The size of dims laid end to end: a sum when all are known; a symbol survives
    being joined with zero-sized pieces."""
    if all(isinstance(d, int) for d in dims):
        return sum(dims)  # type: ignore[arg-type]
    nonzero = [d for d in dims if d != 0]
    if len(nonzero) == 1 and isinstance(nonzero[0], str):
        return nonzero[0]
    return None


# Same-width signed integers for dtypes torch only moves, not computes with: reinterpreting
# bits is exact for copies, gathers and scatters, and for wrapping add/mul.
_SIGNED_VIEW = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64,
                torch.float8_e4m3fn: torch.int8, torch.float8_e4m3fnuz: torch.int8, torch.float8_e5m2: torch.int8,
                torch.float8_e5m2fnuz: torch.int8}
if hasattr(torch, "float8_e8m0fnu"):
    _SIGNED_VIEW[torch.float8_e8m0fnu] = torch.int8
_FLOAT8 = {dt for dt, v in _SIGNED_VIEW.items() if v == torch.int8}


def movable(x: torch.Tensor) -> torch.Tensor:
    """`x` reinterpreted so torch's gather/scatter kernels accept it (undo with `.view(dtype)`)."""
    view = _SIGNED_VIEW.get(x.dtype)
    return x if view is None else x.view(view)


# ONNX scatter reduction -> torch.scatter_reduce's name for it (ScatterElements, ScatterND).
SCATTER_REDUCTIONS = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def to_compute(x: torch.Tensor, reduction: str) -> torch.Tensor:
    """`x` in a dtype where torch can apply `reduction` ("add", "mul", "max", "min") with
    results that convert back exactly by `from_compute`: float8 widened to float32; for max/min
    the same order in a dtype torch compares (`ordered`); for add/mul the signed type of the
    same width (wrapping sums and products have the same bits) and bool as uint8."""
    if x.dtype in _FLOAT8:
        return x.to(torch.float32)
    if reduction in ("max", "min"):
        return ordered(x)
    if x.dtype == torch.bool:
        return x.to(torch.uint8)
    return movable(x)


def from_compute(y: torch.Tensor, dtype: torch.dtype, reduction: str) -> torch.Tensor:
    if y.dtype == dtype:
        return y
    if dtype in _FLOAT8:
        return y.to(dtype)
    if reduction in ("max", "min"):
        return unordered(y, dtype)
    if dtype == torch.bool:
        return y != 0
    return y.view(dtype)
