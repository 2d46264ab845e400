"""Checking and converting the tensors a user hands to `execute`."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import torch

from ..engine import IOTensor, ProfileRange
from ..errors import ShapeError
from ..ir import DType, OptionalType, SequenceType, format_shape, numpy_to_torch, torch_to_numpy


# Host arrays at least this large go to the GPU through pinned (page-locked) staging
# memory: the copy is then asynchronous and faster. Measured on an H200 (torch 2.11,
# bench/runtime_check.py), pageable vs pinned, ms: 256 KiB 0.036 vs 0.039, 1 MiB 0.087 vs
# 0.070, 4 MiB 0.29 vs 0.19, 16 MiB 1.00 vs 0.62: below ~1 MiB pinning (a host memcpy
# and an allocator call) does not pay for itself.
PIN_THRESHOLD_BYTES = 1 << 20


def host_to_device(t: torch.Tensor, device: torch.device, keep_on_host: bool = False) -> torch.Tensor:
    """A host tensor on its way to `device`. With `keep_on_host` it stays on the host
    (pinned when large) for the caller to copy into a buffer of its own."""
    if device.type == "cpu" or t.device.type != "cpu":
        return t if t.device == device or keep_on_host else t.to(device)
    if not t.is_pinned() and t.numel() * t.element_size() >= PIN_THRESHOLD_BYTES:
        t = t.pin_memory()
    if keep_on_host:
        return t
    # From pinned memory the copy is asynchronous on the current stream; torch's pinned
    # allocator keeps the staging block until the copy is done.
    return t.to(device, non_blocking=t.is_pinned())


def device_to_host(values: list[Any]) -> list[Any]:
    """Outputs as numpy: device tensors are copied into pinned host memory asynchronously,
    then one wait on the current stream (not the whole device)."""
    staged: list[Any] = []
    waits = set()
    for v in values:
        if isinstance(v, torch.Tensor) and v.device.type == "cuda":
            host = torch.empty(tuple(v.shape), dtype=v.dtype, pin_memory=True)
            host.copy_(v, non_blocking=True)
            waits.add(v.device)
            staged.append(host)
        else:
            staged.append(v)
    for device in waits:
        torch.cuda.current_stream(device).synchronize()
    return [to_user_value(v, True) for v in staged]


def copy_into_user_buffers(produced: Mapping[str, Any], targets: Mapping[str, Any]) -> dict[str, Any]:
    """Copy outputs into the caller's preallocated tensors (torch on any device, or numpy
    arrays); returns those objects by name. Raises ShapeError naming a buffer that does not fit."""
    result: dict[str, Any] = {}
    for name, value in produced.items():
        target = targets[name]
        if not isinstance(value, torch.Tensor):
            raise ShapeError(f"output '{name}' is {type(value).__name__}, not a tensor: "
                             f"it cannot be written into a preallocated buffer")
        if isinstance(target, np.ndarray):
            want = DType.from_torch(value.dtype).numpy
            if target.dtype != want or not target.flags.c_contiguous or not target.flags.writeable:
                raise ShapeError(f"preallocated output '{name}' must be a writable C-contiguous {want} array, "
                                 f"got {target.dtype}{'' if target.flags.c_contiguous else ' (not contiguous)'}")
            try:
                dest = torch.from_numpy(target)
            except TypeError as exc:
                raise ShapeError(f"preallocated output '{name}': {exc}; pass a torch tensor") from exc
        elif isinstance(target, torch.Tensor):
            dest = target
            if dest.dtype != value.dtype:
                raise ShapeError(f"preallocated output '{name}' must be {value.dtype}, got {dest.dtype}")
        else:
            raise ShapeError(f"preallocated output '{name}' must be a torch tensor or numpy array, "
                             f"not {type(target).__name__}")
        if tuple(dest.shape) != tuple(value.shape):
            raise ShapeError(f"preallocated output '{name}' has shape {list(dest.shape)}, "
                             f"the output is {list(value.shape)}")
        # Asynchronous when the destination is on the GPU or pinned; a pageable host
        # destination makes torch wait for the copy, so it is complete on return.
        dest.copy_(value, non_blocking=dest.device.type == "cuda" or dest.is_pinned())
        result[name] = target
    return result


def to_tensor(name: str, value: Any, device: torch.device, keep_on_host: bool = False) -> tuple[Any, bool]:
    """The value as a tensor on the device (or numpy, for dtypes torch lacks), and whether it
    came as numpy. Tensors already on the device pass through untouched (no copy). With
    `keep_on_host` host values stay host tensors (see `host_to_device`)."""
    if isinstance(value, torch.Tensor):
        if value.device != device:
            value = host_to_device(value, device, keep_on_host) if value.device.type == "cpu" else value.to(device)
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
            return host_to_device(numpy_to_torch(array), device, keep_on_host), True
        except TypeError as exc:
            raise ShapeError(f"input '{name}': {exc}") from exc
    raise ShapeError(f"input '{name}' must be a numpy array or torch tensor, not {type(value).__name__}")


def to_runtime_value(spec: IOTensor, value: Any, device: torch.device, keep_on_host: bool = False
                     ) -> tuple[Any, bool]:
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
    return to_tensor(spec.name, value, device, keep_on_host)


def dense(value: Any) -> Any:
    """An output in its declared row-major layout, as TensorRT's linear format gives it: a
    tactic may leave channels_last or a strided view; copied only then."""
    if isinstance(value, torch.Tensor):
        return value if value.is_contiguous() else value.contiguous()
    if isinstance(value, (list, tuple)):
        return [dense(v) for v in value]
    return value


def to_user_value(value: Any, as_numpy: bool) -> Any:
    """An output as the user gets it: numpy when the inputs were numpy; lists stay lists."""
    if isinstance(value, torch.Tensor):
        return torch_to_numpy(value) if as_numpy else value
    if isinstance(value, (list, tuple)):
        return [to_user_value(v, as_numpy) for v in value]
    return value


def in_range(shape: tuple[int, ...], r: ProfileRange) -> bool:
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
        if spec.profiles and not any(in_range(shape, r) for r in spec.profiles):
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
