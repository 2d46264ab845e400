"""A thin onnx.backend adapter over the public API (compile + predict)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep

from ..api import CompiledModel, compile


def as_array(value: Any) -> Any:
    """The onnx test loader hands over dtypes numpy lacks (int4, float4, ...) as TensorProtos."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [as_array(v) for v in value]
    return value


class TensorkilnRep(BackendRep):
    def __init__(self, model: CompiledModel):
        self.model = model

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = {k: as_array(v) for k, v in inputs.items()}
        else:
            if isinstance(inputs, (np.ndarray, onnx.TensorProto)):
                inputs = [inputs]
            feeds = dict(zip(self.model.input_names, (as_array(v) for v in inputs)))
        outputs = self.model.predict(feeds)
        return tuple(outputs[name] for name in self.model.output_names)


class TensorkilnBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> TensorkilnRep:
        return TensorkilnRep(compile(model, device=_device(device)))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Sequence[np.ndarray], device: str = "CPU", **kwargs: Any):
        return cls.prepare(model, device).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        if device.upper().startswith("CUDA"):
            import torch
            return torch.cuda.is_available()
        return device.upper() == "CPU"


def _device(device: str) -> str:
    return "cuda" if str(device).upper().startswith("CUDA") else "cpu"
