"""Constant: a tensor given as an attribute. The ONNX importer turns numeric Constants into
initializers; this op serves the rest (strings, network-API layers)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..ir import DType, TensorType, numpy_to_torch
from .registry import InferContext, Op, register

_FORMS = ("value", "sparse_value", "value_float", "value_floats", "value_int", "value_ints", "value_string",
          "value_strings")


def constant_array(attrs: dict[str, Any]) -> np.ndarray:
    given = [k for k in _FORMS if attrs.get(k) is not None]
    if len(given) != 1:
        raise ValueError(f"Constant needs exactly one of {', '.join(_FORMS)}; got {given or 'none'}")
    key = given[0]
    v = attrs[key]
    if key in ("value", "sparse_value"):
        return np.asarray(v)
    if key in ("value_float", "value_floats"):
        return np.asarray(v, dtype=np.float32)
    if key in ("value_int", "value_ints"):
        return np.asarray(v, dtype=np.int64)
    return np.asarray(v, dtype=object)


@register
class Constant(Op):
    name = "Constant"
    attrs = {k: None for k in _FORMS}

    def check(self, node):
        try:
            constant_array(node.attrs)
        except ValueError as exc:
            return str(exc)
        return None

    def infer(self, ctx: InferContext) -> list[Optional[TensorType]]:
        array = constant_array(ctx.attrs)
        return [TensorType(DType.from_numpy(array.dtype), tuple(array.shape))]

    def reference(self, ctx, inputs, attrs):
        array = constant_array(attrs)
        if array.dtype == object or not DType.from_numpy(array.dtype).has_torch:
            return [array]  # strings and dtypes torch lacks stay numpy, as the executor keeps them
        return numpy_to_torch(array).to(ctx.device)
