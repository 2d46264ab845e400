"""Checking and converting the tensors a user hands to `execute`."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import torch

from ..engine import IOTensor, ProfileRange
from ..errors import ShapeError
from ..ir import DType, OptionalType, SequenceType, format_shape, numpy_to_torch, torch_to_numpy


def to_tensor(name: str, value: Any, device: torch.device) -> tuple[Any, bool]:
    """The value as a tensor on the device (or numpy, for dtypes torch lacks), and whether it came as numpy."""
    if isinstance(value, torch.Tensor):
        if value.device != device:
            value = value.to(device)
        return value, False
    if isinstance(value, (np.ndarray, np.generic, list, tuple, int, float, bool)):
        array = np.asarray(value)
        if array.dtype == object or array.dtype.kind in "USO":
            raise ShapeError(f"input '{name}': string/object arrays are not supported")
        if not DType.from_numpy(array.dtype).has_torch:
            # Sub-byte and other exotic dtypes have no torch dtype: they stay numpy on the
            # CPU and only the ops that handle them (Cast, Q/DQ) read them.
            if device.type != "cpu":
                raise ShapeError(f"input '{name}': dtype {array.dtype} is only supported on the CPU")
            return array, True
        try:
            return numpy_to_torch(array).to(device), True
        except TypeError as exc:
            raise ShapeError(f"input '{name}': {exc}") from exc
    raise ShapeError(f"input '{name}' must be a numpy array or torch tensor, not {type(value).__name__}")


def to_runtime_value(spec: IOTensor, value: Any, device: torch.device) -> tuple[Any, bool]:
    """Like `to_tensor`, for any input kind: sequences are lists, an empty optional is None."""
    t = spec.type
    if isinstance(t, OptionalType):
        if value is None:
            return None, True
        return to_runtime_value(IOTensor(spec.name, t.elem), value, device)
    if isinstance(t, SequenceType):
        if not isinstance(value, (list, tuple)):
            raise ShapeError(f"input '{spec.name}' is a sequence: pass a list of arrays, not {type(value).__name__}")
        items = [to_tensor(f"{spec.name}[{i}]", v, device) for i, v in enumerate(value)]
        return [x for x, _ in items], all(was_numpy for _, was_numpy in items)
    return to_tensor(spec.name, value, device)


def to_user_value(value: Any, as_numpy: bool) -> Any:
    """An output as the user gets it: numpy when the inputs were numpy; lists stay lists."""
    if isinstance(value, torch.Tensor):
        return torch_to_numpy(value) if as_numpy else value
    if isinstance(value, (list, tuple)):
        return [to_user_value(v, as_numpy) for v in value]
    return value


def _in_range(shape: tuple[int, ...], r: ProfileRange) -> bool:
    return len(shape) == len(r.min) and all(lo <= d <= hi for d, lo, hi in zip(shape, r.min, r.max))


def check_inputs(specs: list[IOTensor], tensors: Mapping[str, Any]) -> None:
    """Raise ShapeError naming the input whose dtype or shape does not fit the engine."""
    symbols: dict[str, tuple[int, str]] = {}
    for spec in specs:
        if not spec.is_tensor:
            continue
        t = tensors[spec.name]
        dt = DType.from_torch(t.dtype) if isinstance(t, torch.Tensor) else DType.from_numpy(t.dtype)
        if dt != spec.dtype:
            raise ShapeError(f"input '{spec.name}' must be {spec.dtype.short}, got {dt.short}")
        shape = tuple(t.shape)
        if spec.shape is not None:
            if len(shape) != len(spec.shape):
                raise ShapeError(f"input '{spec.name}' must have rank {len(spec.shape)} "
                                 f"{format_shape(spec.shape)}, got shape {list(shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, shape)):
                if isinstance(want, int) and want != got:
                    raise ShapeError(f"input '{spec.name}' dimension {axis} must be {want}, got {got} "
                                     f"(expected {format_shape(spec.shape)}, got {list(shape)})")
                if isinstance(want, str):
                    seen = symbols.get(want)
                    if seen is not None and seen[0] != got:
                        raise ShapeError(f"input '{spec.name}' dimension {axis} ('{want}') is {got}, but "
                                         f"input '{seen[1]}' gave '{want}' = {seen[0]}")
                    symbols[want] = (got, spec.name)
        if spec.profiles and not any(_in_range(shape, r) for r in spec.profiles):
            ranges = "; ".join(f"min {list(r.min)} max {list(r.max)}" for r in spec.profiles)
            raise ShapeError(f"input '{spec.name}' shape {list(shape)} is outside every optimization profile "
                             f"({ranges})")


def missing_or_extra(specs: list[IOTensor], given: Mapping[str, Any], ignored: frozenset[str] = frozenset()
                     ) -> Optional[str]:
    names = [s.name for s in specs]
    missing = [n for n in names if n not in given]
    extra = [n for n in given if n not in names and n not in ignored]
    parts = []
    if missing:
        parts.append(f"missing input(s) {missing}")
    if extra:
        parts.append(f"unknown input(s) {extra}")
    if parts:
        return "; ".join(parts) + f"; the engine's inputs are {names}"
    return None
