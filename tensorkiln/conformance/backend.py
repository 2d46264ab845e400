"""A thin onnx.backend adapter over the public API (compile + predict)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from ..api import CompiledModel, compile


class TensorkilnRep(BackendRep):
    def __init__(self, model: CompiledModel):
        self.model = model

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = inputs
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self.model.input_names, inputs))
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
