"""Element types. Values are ONNX TensorProto codes so the frontend maps them 1:1,
but nothing here imports onnx: the runtime uses this module too."""

from __future__ import annotations

import enum

import ml_dtypes
import numpy as np
import torch


class DType(enum.Enum):
    FLOAT32 = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    FLOAT64 = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26

    @property
    def short(self) -> str:
        return _SHORT[self]

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_integer(self) -> bool:
        return self in _INTEGERS

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def numpy(self) -> np.dtype:
        try:
            return _NUMPY[self]
        except KeyError:
            raise TypeError(f"dtype {self.short} has no numpy equivalent") from None

    @property
    def torch(self) -> torch.dtype:
        try:
            return _TORCH[self]
        except KeyError:
            raise TypeError(f"dtype {self.short} is not supported by the torch runtime") from None

    @property
    def has_torch(self) -> bool:
        return self in _TORCH

    @staticmethod
    def from_numpy(dtype: np.dtype | type) -> "DType":
        dtype = np.dtype(dtype)
        for k, v in _NUMPY.items():
            if v == dtype:
                return k
        if dtype.kind in ("U", "S", "O"):
            return DType.STRING
        raise TypeError(f"numpy dtype {dtype} has no tensorkiln equivalent")

    @staticmethod
    def from_torch(dtype: torch.dtype) -> "DType":
        try:
            return _FROM_TORCH[dtype]
        except KeyError:
            raise TypeError(f"torch dtype {dtype} has no tensorkiln equivalent") from None

    @staticmethod
    def parse(text: str) -> "DType":
        key = text.strip().lower()
        for k, v in _SHORT.items():
            if v == key or k.name.lower() == key:
                return k
        aliases = {"float": DType.FLOAT32, "half": DType.FLOAT16, "double": DType.FLOAT64, "fp32": DType.FLOAT32,
                   "fp16": DType.FLOAT16, "bf16": DType.BFLOAT16, "fp8": DType.FLOAT8E4M3FN}
        if key in aliases:
            return aliases[key]
        raise ValueError(f"unknown dtype '{text}'")


_SHORT = {
    DType.FLOAT32: "float32", DType.UINT8: "uint8", DType.INT8: "int8", DType.UINT16: "uint16",
    DType.INT16: "int16", DType.INT32: "int32", DType.INT64: "int64", DType.STRING: "string",
    DType.BOOL: "bool", DType.FLOAT16: "float16", DType.FLOAT64: "float64", DType.UINT32: "uint32",
    DType.UINT64: "uint64", DType.COMPLEX64: "complex64", DType.COMPLEX128: "complex128",
    DType.BFLOAT16: "bfloat16", DType.FLOAT8E4M3FN: "float8e4m3fn", DType.FLOAT8E4M3FNUZ: "float8e4m3fnuz",
    DType.FLOAT8E5M2: "float8e5m2", DType.FLOAT8E5M2FNUZ: "float8e5m2fnuz", DType.UINT4: "uint4",
    DType.INT4: "int4", DType.FLOAT4E2M1: "float4e2m1", DType.FLOAT8E8M0: "float8e8m0", DType.UINT2: "uint2",
    DType.INT2: "int2",
}

_FLOATS = {DType.FLOAT32, DType.FLOAT16, DType.FLOAT64, DType.BFLOAT16, DType.FLOAT8E4M3FN,
           DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ, DType.FLOAT4E2M1, DType.FLOAT8E8M0}
# The half-precision floats tensor cores take: what "lower precision" means to the precision
# assigner, the I/O formats and the tactics.
HALF_FLOATS = (DType.FLOAT16, DType.BFLOAT16)
_INTEGERS = {DType.UINT8, DType.INT8, DType.UINT16, DType.INT16, DType.INT32, DType.INT64, DType.UINT32,
             DType.UINT64, DType.UINT4, DType.INT4, DType.UINT2, DType.INT2}

_NUMPY = {
    DType.FLOAT32: np.dtype(np.float32), DType.UINT8: np.dtype(np.uint8), DType.INT8: np.dtype(np.int8),
    DType.UINT16: np.dtype(np.uint16), DType.INT16: np.dtype(np.int16), DType.INT32: np.dtype(np.int32),
    DType.INT64: np.dtype(np.int64), DType.BOOL: np.dtype(np.bool_), DType.FLOAT16: np.dtype(np.float16),
    DType.FLOAT64: np.dtype(np.float64), DType.UINT32: np.dtype(np.uint32), DType.UINT64: np.dtype(np.uint64),
    DType.COMPLEX64: np.dtype(np.complex64), DType.COMPLEX128: np.dtype(np.complex128),
    DType.BFLOAT16: np.dtype(ml_dtypes.bfloat16), DType.FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    DType.FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz), DType.FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    DType.FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz), DType.UINT4: np.dtype(ml_dtypes.uint4),
    DType.INT4: np.dtype(ml_dtypes.int4), DType.FLOAT4E2M1: np.dtype(ml_dtypes.float4_e2m1fn),
    DType.FLOAT8E8M0: np.dtype(ml_dtypes.float8_e8m0fnu), DType.UINT2: np.dtype(ml_dtypes.uint2),
    DType.INT2: np.dtype(ml_dtypes.int2),
}

_TORCH = {
    DType.FLOAT32: torch.float32, DType.UINT8: torch.uint8, DType.INT8: torch.int8, DType.UINT16: torch.uint16,
    DType.INT16: torch.int16, DType.INT32: torch.int32, DType.INT64: torch.int64, DType.BOOL: torch.bool,
    DType.FLOAT16: torch.float16, DType.FLOAT64: torch.float64, DType.UINT32: torch.uint32,
    DType.UINT64: torch.uint64, DType.COMPLEX64: torch.complex64, DType.COMPLEX128: torch.complex128,
    DType.BFLOAT16: torch.bfloat16, DType.FLOAT8E4M3FN: torch.float8_e4m3fn,
    DType.FLOAT8E4M3FNUZ: torch.float8_e4m3fnuz, DType.FLOAT8E5M2: torch.float8_e5m2,
    DType.FLOAT8E5M2FNUZ: torch.float8_e5m2fnuz,
}
if hasattr(torch, "float8_e8m0fnu"):
    _TORCH[DType.FLOAT8E8M0] = torch.float8_e8m0fnu
_FROM_TORCH = {v: k for k, v in _TORCH.items()}

# numpy <-> torch for dtypes numpy lacks natively (ml_dtypes ones): reinterpret through
# an integer of the same width.
_BITCAST_VIA = {1: (np.uint8, torch.uint8), 2: (np.uint16, torch.int16)}


def numpy_to_torch(array: np.ndarray) -> torch.Tensor:
    """Zero-copy where numpy and torch share the dtype; bit-exact reinterpretation for ml_dtypes."""
    dt = DType.from_numpy(array.dtype)
    if dt == DType.STRING:
        raise TypeError("string tensors cannot be converted to torch tensors")
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)  # (never on 0-d arrays: it would make them 1-d)
    if array.dtype.type.__module__.startswith("ml_dtypes"):
        np_int, _ = _BITCAST_VIA[array.dtype.itemsize]
        return torch.from_numpy(array.view(np_int).copy()).view(dt.torch)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def torch_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    dt = DType.from_torch(tensor.dtype)
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    target = dt.numpy
    if target.type.__module__.startswith("ml_dtypes"):
        _, t_int = _BITCAST_VIA[target.itemsize]
        return tensor.contiguous().view(t_int).numpy().view(target)
    if tensor.dtype in (torch.uint16, torch.uint32, torch.uint64):
        # torch cannot hand these to numpy directly on older versions: go through signed views.
        signed = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}[tensor.dtype]
        return tensor.contiguous().view(signed).numpy().view(target)
    return tensor.numpy()
