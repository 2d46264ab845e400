"""trtexec's --inputIOFormats / --outputIOFormats (kiln build: --input-io-formats / --output-io-formats).

A value is `type:format[,type:format...]`, e.g. `fp16:chw`. One spec applies to every tensor of
the side: a float type (fp32, fp16, bf16) to every floating-point tensor (integer and bool tensors
keep their type), another type to every tensor; the builder refuses the changes it cannot make
(io_formats.boundary_dtypes), naming the tensor. Several specs give one per tensor, in the network's
order, as trtexec reads them. Formats are linear only: `chw` (trtexec's name for a linear tensor
of any rank) or `linear`.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..errors import ConfigError
from ..ir import TensorType, Value
from ..precision.io_formats import io_format_dtype

LINEAR_FORMATS = ("chw", "linear")


def parse_io_formats(text: Optional[str], tensors: Sequence[Value], flag: str) -> dict[str, str]:
    """Tensor name -> type name, from a flag's value; {} without one."""
    if text is None:
        return {}
    specs = [s.strip() for s in text.split(",")]
    if not specs or any(not s for s in specs):
        raise ConfigError(f"{flag}: empty spec in '{text}' (expected type:format[,type:format...], e.g. fp16:chw)")
    types = [_spec_type(s, flag) for s in specs]
    if len(types) == 1:
        dtype = io_format_dtype(types[0], f"{flag} '{specs[0]}'")
        if dtype.is_float:
            return {v.name: types[0] for v in tensors
                    if isinstance(v.type, TensorType) and v.type.dtype is not None and v.type.dtype.is_float}
        return {v.name: types[0] for v in tensors}
    if len(types) != len(tensors):
        names = [v.name for v in tensors]
        raise ConfigError(f"{flag} gives {len(types)} specs for {len(tensors)} tensors {names}: give one spec for "
                          f"all, or one per tensor in this order")
    return {v.name: t for v, t in zip(tensors, types)}


def _spec_type(spec: str, flag: str) -> str:
    kind, _, layout = spec.partition(":")
    for fmt in (layout.split("+") if layout else []):
        if fmt.strip().lower() not in LINEAR_FORMATS:
            raise ConfigError(f"{flag}: format '{fmt}' in '{spec}' is not supported: tensorkiln engines take and "
                              f"give linear tensors ({' or '.join(LINEAR_FORMATS)})")
    return kind.strip()


def formatted(tensors: Sequence[Value], formats: dict[str, str]) -> list[Value]:
    """The tensors as the engine will take or give them: each with the dtype its format names."""
    result = []
    for v in tensors:
        text = formats.get(v.name)
        if text is None or not isinstance(v.type, TensorType):
            result.append(v)
        else:
            result.append(Value(v.name, TensorType(io_format_dtype(text, v.name), v.type.shape)))
    return result


__all__ = ["LINEAR_FORMATS", "formatted", "parse_io_formats"]
