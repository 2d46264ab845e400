"""Shapes whose dimensions may be symbolic.

A dimension is an ``int`` (known), a ``str`` (a named symbol such as ``"batch"``: equal
names are equal sizes) or ``None`` (unknown). A shape of ``None`` means the rank is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from .dtype import DType

Dim = Union[int, str, None]
Shape = Optional[tuple[Dim, ...]]


def format_dim(dim: Dim) -> str:
    return "?" if dim is None else str(dim)


def format_shape(shape: Shape) -> str:
    if shape is None:
        return "[*]"
    return "[" + ",".join(format_dim(d) for d in shape) + "]"


def is_static(shape: Shape) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Numpy-style multidirectional broadcast over possibly symbolic dims."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = [d for d in dims if d != 1]
        if not known:
            out.append(1)
            continue
        ints = {d for d in known if isinstance(d, int)}
        if len(ints) > 1:
            raise ValueError(f"shapes {', '.join(format_shape(s) for s in shapes)} do not broadcast")
        if ints:
            out.append(ints.pop())
        elif len(set(known)) == 1:
            out.append(known[0])
        elif len(known) == len(dims) and all(isinstance(d, str) for d in known):
            out.append(None)
        else:
            out.append(None)
    return tuple(out)


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: Shape = None

    @property
    def rank(self) -> Optional[int]:
        return None if self.shape is None else len(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.short}{format_shape(self.shape)}"


@dataclass(frozen=True)
class SequenceType:
    """An ONNX sequence: a list of tensors (at run time, a Python list)."""

    elem: Optional[TensorType] = None

    def __str__(self) -> str:
        return f"seq({self.elem or '?'})"


@dataclass(frozen=True)
class OptionalType:
    """An ONNX optional: a tensor or sequence that may be absent (None at run time)."""

    elem: Optional[Union[TensorType, SequenceType]] = None

    def __str__(self) -> str:
        return f"optional({self.elem or '?'})"


ValueType = Union[TensorType, SequenceType, OptionalType]
