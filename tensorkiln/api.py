"""The one-call API: `tensorkiln.compile(model) -> CompiledModel` with `predict(inputs)`."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence, Union

from .builder import Builder, BuilderConfig
from .builder.config import profile_from_optional
from .engine import EnginePlan
from .errors import ShapeError
from .ir import Graph
from .network import NetworkDefinition
from .runtime import Engine, Runtime


class CompiledModel:
    """A built and loaded engine with a simple call interface."""

    def __init__(self, plan: EnginePlan, engine: Engine):
        self.plan = plan
        self.engine = engine
        self.context = engine.create_execution_context()

    @property
    def input_names(self) -> list[str]:
        return self.engine.input_names

    @property
    def output_names(self) -> list[str]:
        return self.engine.output_names

    def predict(self, inputs: Union[Mapping[str, Any], Sequence[Any], Any]) -> dict[str, Any]:
        """Inputs as {name: array}, a list in input order, or one array for a one-input model."""
        if not isinstance(inputs, Mapping):
            if isinstance(inputs, (list, tuple)):
                if len(inputs) != len(self.input_names):
                    raise ShapeError(f"predict got {len(inputs)} inputs; the model takes {len(self.input_names)} "
                                     f"({self.input_names})")
                inputs = dict(zip(self.input_names, inputs))
            elif len(self.input_names) == 1:
                inputs = {self.input_names[0]: inputs}
            else:
                raise ShapeError(f"the model takes {len(self.input_names)} inputs ({self.input_names}): "
                                 "pass a dict or a list")
        return self.context.execute(inputs)

    __call__ = predict

    def save(self, path: Union[str, os.PathLike]) -> None:
        self.plan.save(path)


def compile(model: Union[str, os.PathLike, bytes, Graph, NetworkDefinition, Any], *, device: str = "cpu",
            fp16: bool = False, bf16: bool = False, tf32: bool = True,
            shapes: Optional[Mapping[str, Sequence[int]]] = None, debug: bool = False) -> CompiledModel:
    """Build an engine from an ONNX model (path, bytes, ModelProto) or a network, and load it."""
    if isinstance(model, NetworkDefinition):
        graph = model.validate()
    elif isinstance(model, Graph):
        graph = model
    else:
        from .frontends.onnx import parse_onnx
        graph = parse_onnx(model)
    config = BuilderConfig(device=device, fp16=fp16, bf16=bf16, tf32=tf32, profiles=profile_from_optional(shapes),
                           debug=debug)
    plan = Builder(config).build(graph)
    return CompiledModel(plan, Runtime(device).load(plan))
